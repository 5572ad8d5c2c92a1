"""deploy/: the Kubernetes manifests and the compose file are valid (the Kubernetes
schemas of `kubernetes-validate`, strict; the compose-spec JSON schema vendored beside
this file), and agree with the service they deploy: its settings, its routes, its
ports, its metrics. Offline: nothing is deployed (no cluster, no container engine)."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from api.app import APP_ROUTES
from api.health import HEALTH_CHECK_TIMEOUT_SECONDS, healthz
from api.settings import DOCUMENTED, ENV_PREFIX, Settings
from tests.support.service import Live

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))
COMPOSE = DEPLOY / "compose.yaml"
HAPROXY = DEPLOY / "haproxy.cfg"
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")
# The oldest Kubernetes these manifests are meant for (kubernetes-validate ships its
# schemas; strict mode refuses any field the schema does not name).
K8S_VERSION = "1.30"
# onair exits at most this long after its drain: the grace period is drain + this.
EXIT_BOUND_SECONDS = 20


ONAIR_NAME = re.compile(r"\bONAIR_[A-Z0-9_]*[A-Z0-9]\b")
METRIC_NAME = re.compile(r"\bonair_[a-z0-9_]+\b")
# container port name -> the Settings field whose default it must be
PORT_SETTINGS = {
    "http": "http_port",
    "rtmp": "rtmp_port",
    "hls-push": "hls_ingest_port",
    "srt": "srt_port",
}


def default(field_name: str) -> Any:
    (value,) = [f.default for f in fields(Settings) if f.name == field_name]
    return value


@cache
def k8s_documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    return tuple(
        (path.name, document)
        for path in K8S_FILES
        for document in yaml.safe_load_all(path.read_text())
        if document
    )


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [
        d
        for _, d in k8s_documents()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    return copy.deepcopy(found)


def services() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_documents() if d["kind"] == "Service"}


def encoder_pod() -> dict[str, Any]:
    return dict(one("StatefulSet")["spec"]["template"])


def encoder_container() -> dict[str, Any]:
    (container,) = encoder_pod()["spec"]["containers"]
    return dict(container)


def container_environment() -> dict[str, str]:
    """What the encoder container's environment holds: its ConfigMaps' and Secrets'
    keys (envFrom), then its own `env` values."""
    container = encoder_container()
    environment: dict[str, str] = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            kind, name = "ConfigMap", source["configMapRef"]["name"]
            data = one(kind, name)["data"]
        else:
            kind, name = "Secret", source["secretRef"]["name"]
            data = one(kind, name)["stringData"]
        environment.update({str(k): str(v) for k, v in data.items()})
    environment.update({item["name"]: item.get("value", "") for item in container["env"]})
    return environment


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def onair_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items() if name.startswith("onair-")}


def haproxy_backends() -> dict[str, list[str]]:
    """Each `backend` section of haproxy.cfg: its lines, comments left out."""
    backends: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in HAPROXY.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line[0].isspace():
            words = line.split()
            current = backends.setdefault(words[1], []) if words[0] == "backend" else None
        elif current is not None:
            current.append(line.strip())
    return backends


def bytes_of(quantity: str) -> int:
    """A Kubernetes quantity with a binary suffix (`20Gi`), in bytes."""
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
    match = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|Ti)?", quantity)
    assert match, quantity
    return int(match[1]) * units.get(match[2] or "", 1)


# --- the schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.name)
def test_every_kubernetes_document_validates_strictly(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_the_strict_validation_refuses_a_misspelt_field() -> None:
    statefulset = one("StatefulSet")
    spec = statefulset["spec"]["template"]["spec"]
    spec["terminationGracePeriod"] = spec.pop("terminationGracePeriodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, K8S_VERSION, strict=True)


def test_the_manifests_hold_every_part_of_the_deployment() -> None:
    kinds = sorted(d["kind"] for _, d in k8s_documents())
    assert kinds == sorted(
        ["ConfigMap", "ConfigMap", "Secret", "StatefulSet", "PodDisruptionBudget"]
        + ["HorizontalPodAutoscaler"]
        + ["Service"] * 5  # ingest, srt, api, peers, postgres
    )


def compose_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_the_compose_file_validates_against_the_compose_spec() -> None:
    assert compose_errors(compose()) == []
    wrong = compose()
    wrong["services"]["haproxy"]["stop_grace"] = "50s"  # no such key
    assert compose_errors(wrong)


# --- settings ------------------------------------------------------------------------


def test_every_onair_name_in_deploy_is_a_setting_of_the_service() -> None:
    settings = {ENV_PREFIX + suffix for suffix in DOCUMENTED}
    files = [*K8S_FILES, COMPOSE, DEPLOY / "Dockerfile"]
    used = {name for path in files for name in ONAIR_NAME.findall(path.read_text())}
    assert used - settings == set()


def test_the_encoder_id_is_left_to_the_store() -> None:
    assert "ONAIR_ENCODER_ID" not in container_environment()
    for service in onair_services().values():
        assert "ONAIR_ENCODER_ID" not in service["environment"]


def test_the_credentials_are_in_the_secret_and_the_rest_in_the_config_map() -> None:
    secret = one("Secret", "onair")["stringData"]
    assert set(secret) == {"ONAIR_DATABASE_URL", "ONAIR_S3_ACCESS_KEY", "ONAIR_S3_SECRET_KEY"}
    config = one("ConfigMap", "onair")["data"]
    assert not set(config) & set(secret)
    assert config["ONAIR_S3_ENDPOINT"].startswith("https://")
    # The database URL names the ExternalName Service of the shared PostgreSQL.
    postgres = services()["onair-postgres"]["spec"]
    assert postgres["type"] == "ExternalName"
    assert "@onair-postgres:5432/" in secret["ONAIR_DATABASE_URL"]


def test_the_hosts_read_the_proxy_protocol_and_drain() -> None:
    environment = container_environment()
    assert environment["ONAIR_PROXY_PROTOCOL"] == "true"
    assert environment["ONAIR_DEV_PROJECT"] == "false"
    assert int(environment["ONAIR_DRAIN_SECONDS"]) > 0
    for service in onair_services().values():
        assert service["environment"]["ONAIR_PROXY_PROTOCOL"] == "true"
        assert int(service["environment"]["ONAIR_DRAIN_SECONDS"]) > 0


def test_the_grace_period_is_the_drain_and_its_exit_bound() -> None:
    drain_seconds = int(container_environment()["ONAIR_DRAIN_SECONDS"])
    grace = encoder_pod()["spec"]["terminationGracePeriodSeconds"]
    assert grace == drain_seconds + EXIT_BOUND_SECONDS
    for name, service in onair_services().items():
        drain_seconds = int(service["environment"]["ONAIR_DRAIN_SECONDS"])
        assert service["stop_grace_period"] == f"{drain_seconds + EXIT_BOUND_SECONDS}s", name


def test_the_capacity_is_the_cpus_and_the_spool_fits_its_volume() -> None:
    environment = container_environment()
    resources = encoder_container()["resources"]
    # One template-2 720p live per core measured (bench/density.py), said explicitly:
    # the default counts the node's cores, not the pod's.
    assert float(environment["ONAIR_CAPACITY"]) == float(resources["requests"]["cpu"])
    assert resources["requests"] == resources["limits"]  # Guaranteed QoS
    (claim,) = one("StatefulSet")["spec"]["volumeClaimTemplates"]
    volume_bytes = bytes_of(claim["spec"]["resources"]["requests"]["storage"])
    assert int(environment["ONAIR_SPOOL_MAX_BYTES"]) < volume_bytes
    (mount,) = encoder_container()["volumeMounts"]
    assert mount["name"] == claim["metadata"]["name"]
    assert environment["ONAIR_DATA_DIR"].startswith(mount["mountPath"] + "/")


# --- routes, ports -------------------------------------------------------------------


def test_the_probes_ask_routes_the_app_serves() -> None:
    routes = {r.path: r for r in APP_ROUTES if r.method == "GET"}
    container = encoder_container()
    readiness = container["readinessProbe"]
    # Ready: the store and S3 answer; the probe outwaits the checks' own timeout.
    assert routes[readiness["httpGet"]["path"]].handler is healthz
    assert readiness["timeoutSeconds"] > HEALTH_CHECK_TIMEOUT_SECONDS
    # Alive and started: the process answers, whatever the store and S3 do.
    for probe in ("livenessProbe", "startupProbe"):
        route = routes[container[probe]["httpGet"]["path"]]
        assert route.handler is not healthz
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    annotations = encoder_pod()["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in routes
    assert int(annotations["prometheus.io/port"]) == default("http_port")


def test_the_container_ports_are_the_settings_defaults() -> None:
    ports = {p["name"]: p for p in encoder_container()["ports"]}
    assert set(ports) == set(PORT_SETTINGS)
    for name, setting in PORT_SETTINGS.items():
        assert ports[name]["containerPort"] == default(setting), name
    assert ports["srt"]["protocol"] == "UDP"
    assert all(p.get("protocol", "TCP") == "TCP" for n, p in ports.items() if n != "srt")
    # Every Service port reaches a container port by name, with its protocol.
    for name, service in services().items():
        for port in service["spec"].get("ports", []):
            if service["spec"].get("type") == "ExternalName":
                continue
            target = ports[port["targetPort"]]
            assert port["protocol"] == target.get("protocol", "TCP"), name
            assert port["port"] == target["containerPort"], name
    exposed = re.search(r"^EXPOSE (.+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert exposed and exposed[1].split() == ["8080", "1935", "8088", "9000/udp"]


def test_the_services_are_the_load_balancers_the_api_and_the_peers() -> None:
    by_name = services()
    selector = one("StatefulSet")["spec"]["selector"]["matchLabels"]
    pod_labels = encoder_pod()["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    for name, service in by_name.items():
        if service["spec"].get("type") != "ExternalName":
            assert service["spec"]["selector"] == selector, name
    ingest = by_name["onair-ingest"]["spec"]
    assert ingest["type"] == "LoadBalancer"
    assert {(p["port"], p["protocol"]) for p in ingest["ports"]} == {(1935, "TCP"), (8088, "TCP")}
    srt = by_name["onair-srt"]["spec"]
    assert srt["type"] == "LoadBalancer" and srt["externalTrafficPolicy"] == "Local"
    assert [(p["port"], p["protocol"]) for p in srt["ports"]] == [(9000, "UDP")]
    api = by_name["onair-api"]["spec"]
    assert api["type"] == "ClusterIP" and [p["port"] for p in api["ports"]] == [8080]
    peers = by_name["onair-peers"]["spec"]
    assert peers["clusterIP"] == "None"
    assert one("StatefulSet")["spec"]["serviceName"] == "onair-peers"
    budget = one("PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1 and budget["selector"]["matchLabels"] == selector


# --- the autoscaler ------------------------------------------------------------------


def adapter_rules() -> list[dict[str, Any]]:
    config = one("ConfigMap", "onair-prometheus-adapter")["data"]["config.yaml"]
    return list(yaml.safe_load(config)["rules"])


def registered_metrics() -> set[str]:
    """Every metric family name api/ registers (a quoted `onair_*` string there)."""
    names: set[str] = set()
    for path in (REPO / "api").rglob("*.py"):
        names |= set(re.findall(r"[\"'](onair_[a-z0-9_]+)[\"']", path.read_text()))
    return names


def test_the_autoscaler_scales_the_hosts_on_the_adapters_metric() -> None:
    hpa = one("HorizontalPodAutoscaler")["spec"]
    statefulset = one("StatefulSet")
    assert hpa["scaleTargetRef"] == {
        "apiVersion": statefulset["apiVersion"],
        "kind": "StatefulSet",
        "name": statefulset["metadata"]["name"],
    }
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert 0 < float(metric["pods"]["target"]["averageValue"]) < 1
    (rule,) = adapter_rules()
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert hpa["minReplicas"] > one("PodDisruptionBudget")["spec"]["maxUnavailable"]


def test_the_adapters_rule_is_used_over_total_of_a_registered_metric() -> None:
    (rule,) = adapter_rules()
    queried = set(METRIC_NAME.findall(rule["seriesQuery"] + rule["metricsQuery"]))
    assert queried == {"onair_capacity_units"}
    assert queried <= registered_metrics()
    assert re.fullmatch(rule["name"]["matches"], "onair_capacity_units")
    used, total = rule["metricsQuery"].split("/")
    assert 'kind="used"' in used and 'kind="total"' in total


# --- compose and its load balancer -----------------------------------------------------


def test_compose_runs_three_hosts_on_one_store_and_one_s3() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "seaweedfs", "haproxy", "onair-1", "onair-2", "onair-3"}
    assert services["seaweedfs"]["image"].startswith("chrislusf/seaweedfs")
    assert services["seaweedfs"]["command"][:1] == ["server"]
    assert "-s3" in services["seaweedfs"]["command"]
    urls = {s["environment"]["ONAIR_DATABASE_URL"] for s in onair_services().values()}
    endpoints = {s["environment"]["ONAIR_S3_ENDPOINT"] for s in onair_services().values()}
    assert len(urls) == 1 and "@postgres:5432/" in urls.pop()
    assert endpoints == {"http://seaweedfs:8333"}
    for name, service in onair_services().items():
        assert service["build"]["dockerfile"] == "deploy/Dockerfile", name
        # Only HAProxy reaches RTMP and HLS push: a connection without its PROXY header
        # would be refused.
        published = [str(p) for p in service.get("ports", [])]
        assert all(p.endswith("/udp") for p in published), name
    # The S3 identity the hosts use is the one SeaweedFS is given.
    identities = json.loads((DEPLOY / "seaweedfs-s3.json").read_text())["identities"]
    keys = {(c["accessKey"], c["secretKey"]) for i in identities for c in i.get("credentials", [])}
    for service in onair_services().values():
        environment = service["environment"]
        assert (environment["ONAIR_S3_ACCESS_KEY"], environment["ONAIR_S3_SECRET_KEY"]) in keys


def test_haproxy_sends_the_proxy_header_to_rtmp_and_hls_push_keeping_a_key_on_one_host() -> None:
    backends = haproxy_backends()
    hosts = set(onair_services())
    expected = {"rtmp": default("rtmp_port"), "hls-push": default("hls_ingest_port")}
    for backend, port in {**expected, "api": default("http_port")}.items():
        lines = backends[backend]
        if backend == "hls-push":  # a publisher's PUTs, by the key in the path: one host
            assert "balance uri depth 2" in lines and "hash-type consistent" in lines
        else:
            assert "balance roundrobin" in lines, backend
        servers = [line.split() for line in lines if line.startswith("server ")]
        assert {words[1] for words in servers} == hosts, backend
        for words in servers:
            assert words[2] == f"{words[1]}:{port}", words
            assert ("send-proxy-v2" in words) == (backend in expected), words
    published = {str(p) for p in compose()["services"]["haproxy"]["ports"]}
    assert published == {f"{p}:{p}" for p in (1935, 8088, 8080)}


@pytest.mark.slow
async def test_the_probes_and_the_autoscalers_series_exist_on_a_running_service(
    live: Live,
) -> None:
    base = str(live.server.make_url("")).rstrip("/")
    container = encoder_container()
    async with aiohttp.ClientSession() as session:
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            path = container[probe]["httpGet"]["path"]
            async with session.get(base + path) as answer:
                assert answer.status == 200, (probe, path, answer.status)
        async with session.get(base + "/metrics") as answer:
            text = await answer.text()
    kinds = {
        sample.labels.get("kind")
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "onair_capacity_units"
    }
    assert {"used", "total"} <= kinds
    queries = " ".join(str(rule["metricsQuery"]) for rule in adapter_rules())
    assert "onair_capacity_units" in queries and 'kind="used"' in queries
