"""The embedded SeaweedFS as an attacker on this machine sees it: only the S3 port works.

Every test here attacks the real server: unsigned (and forged) HTTP writes on the master,
the volume server and the filer, gRPC calls without the server's client certificate (no
TLS, TLS without a certificate, a certificate of another CA) on every gRPC port and on
the unix sockets SeaweedFS serves them on, and `weed shell` without the configuration.
Each attack is checked by its effect, read back through S3, not only by its status.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
from botocore.exceptions import ClientError

from packager.s3server import GRPC_OFFSET, EmbeddedS3, TlsFiles, find_weed

pytestmark = pytest.mark.slow  # SeaweedFS started for real

# A master playlist as onair writes it; over 1 KiB, so SeaweedFS keeps it in a volume chunk.
PLAYLIST = (
    b"#EXTM3U\n#EXT-X-VERSION:3\n" + b"#EXT-X-STREAM-INF:BANDWIDTH=3400000\n720p/i.m3u8\n" * 40
)
EVIL = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nhttp://evil.invalid/x.m3u8\n"
KEY = "shows/news/master.m3u8"


# -- HTTP ----------------------------------------------------------------------------------


def send(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int | None, bytes]:
    """(status, body); status None when nothing answers."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return None, b""


def multipart(content: bytes, name: str = "master.m3u8") -> tuple[bytes, dict[str, str]]:
    boundary = secrets.token_hex(8)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/vnd.apple.mpegurl\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


class UnixHTTPConnection(HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.unix_path)


def unix_http(path: str, method: str, url_path: str, body: bytes | None = None) -> int:
    connection = UnixHTTPConnection(path)
    try:
        connection.request(method, url_path, body=body)
        return connection.getresponse().status
    finally:
        connection.close()


def refused(status: int | None) -> bool:
    """An answer (the port is there), and not a success."""
    return status is not None and status >= 400


def forged_jwt(fid: str) -> str:
    """A JWT of the shape SeaweedFS signs, signed with a key that is not the server's."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"exp": int(time.time()) + 10, "fid": fid}).encode())
    signature = hmac.new(secrets.token_bytes(32), f"{header}.{claims}".encode(), hashlib.sha256)
    return f"{header}.{claims}.{b64(signature.digest())}"


# -- S3 --------------------------------------------------------------------------------------


def s3_as(server: EmbeddedS3, access_key: str, secret_key: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
    )


def intruder_s3(server: EmbeddedS3, n: int) -> Any:
    return s3_as(server, f"INTRUDER{n}KEY", f"intruder-secret-{n}")


def s3_refuses(client: Any, bucket: str) -> bool:
    try:
        client.put_object(Bucket=bucket, Key="intruder.txt", Body=b"x")
    except ClientError as error:
        return error.response["Error"]["Code"] in ("InvalidAccessKeyId", "AccessDenied")
    return False


@pytest.fixture
def playlist(s3_client: Any, bucket: str) -> str:
    s3_client.put_object(
        Bucket=bucket, Key=KEY, Body=PLAYLIST, ContentType="application/vnd.apple.mpegurl"
    )
    return KEY


def read_back(s3_client: Any, bucket: str, key: str = KEY) -> bytes:
    return bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())


def stored_keys(s3_client: Any, bucket: str) -> list[str]:
    listed = s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(item["Key"] for item in listed)


# -- weed shell -------------------------------------------------------------------------------


def weed_shell(
    server: EmbeddedS3, command: str, cwd: Path, config_dir: Path | None, timeout: float = 5.0
) -> str:
    """`weed shell` on the server's master and filer; with `config_dir`, as its operator."""
    p = server.ports
    argv = [find_weed()]
    if config_dir is not None:
        argv.append(f"-config_dir={config_dir}")
    argv += ["shell", f"-master={server.host}:{p.master}", f"-filer={server.host}:{p.filer}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEED_")}
    env["HOME"] = str(cwd)  # no ~/.seaweedfs/security.toml of anyone's
    try:
        done = subprocess.run(
            argv, input=command + "\n", capture_output=True, text=True, cwd=cwd, env=env,
            timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired as expired:  # it waits for a master it cannot reach
        out = expired.stdout or ""
        return out if isinstance(out, str) else out.decode(errors="replace")
    return done.stdout + done.stderr


def chunk_fid(server: EmbeddedS3, bucket: str, key: str, tmp_path: Path) -> str:
    """The volume file id holding the object, asked as the operator (with the config)."""
    out = weed_shell(
        server, f"fs.meta.cat /buckets/{bucket}/{key}", tmp_path, server.data_dir.absolute()
    )
    entry, _ = json.JSONDecoder().raw_decode(out[out.index("{") :])
    return str(entry["chunks"][0]["fileId"])


# -- gRPC ----------------------------------------------------------------------------------


def pb(number: int, value: int | str | bytes) -> bytes:
    """One protobuf field: a varint for an int, length-delimited for str/bytes."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            low, n = n & 0x7F, n >> 7
            out.append(low | (0x80 if n else 0))
            if not n:
                return bytes(out)

    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def create_entry_request(directory: str, name: str, content: bytes) -> bytes:
    """filer_pb.CreateEntryRequest for a file with inline `content`."""
    now = int(time.time())
    attributes = pb(1, len(content)) + pb(2, now) + pb(3, 0o644) + pb(6, now)
    entry = pb(1, name) + pb(4, attributes) + pb(9, content)
    return pb(1, directory) + pb(2, entry)


def put_identity_request(name: str, access_key: str, secret_key: str, actions: list[str]) -> bytes:
    """iam_pb.PutIdentityRequest."""
    identity = pb(1, name) + pb(2, pb(1, access_key) + pb(2, secret_key))
    identity += b"".join(pb(3, action) for action in actions)
    return pb(1, identity)


def intruder_identity(n: int, name: str = "intruder") -> bytes:
    """An identity with every right: INTRUDER<n>KEY / intruder-secret-<n>."""
    actions = ["Read", "Write", "List", "Tagging", "Admin"]
    return put_identity_request(name, f"INTRUDER{n}KEY", f"intruder-secret-{n}", actions)


def grpc_call(target: str, method: str, request: bytes, credentials: Any = None) -> str:
    """The status code name of one unary call (`OK` on success)."""
    options = [("grpc.ssl_target_name_override", "localhost")]
    if credentials is None:
        channel = grpc.insecure_channel(target)
    else:
        channel = grpc.secure_channel(target, credentials, options=options)
    try:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        call(request, timeout=5)
        return "OK"
    except grpc.RpcError as error:
        return str(error.code().name)
    finally:
        channel.close()


def grpc_targets(server: EmbeddedS3) -> dict[str, list[str]]:
    """Every address a component's gRPC is served on: its TCP port and its unix socket."""
    p = server.ports
    ports = {"master": p.master, "volume": p.volume, "filer": p.filer, "s3": p.s3}
    targets: dict[str, list[str]] = {}
    for name, http_port in ports.items():
        grpc_port = http_port + GRPC_OFFSET
        targets[name] = [f"{server.host}:{grpc_port}"]
        sock = f"/tmp/seaweedfs-{name}-grpc-{grpc_port}.sock"
        if os.path.exists(sock):
            targets[name].append(f"unix:{sock}")
    return targets


def attacker_credentials(server: EmbeddedS3, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """What a client without the server's certificate can try, plaintext first.

    The TLS attempts even trust the server's CA (a real attacker does not have it):
    only the missing client certificate can make them fail.
    """
    yield "no TLS", None
    ca = server.tls.ca.read_bytes()
    yield "TLS, no client certificate", grpc.ssl_channel_credentials(root_certificates=ca)
    tmp_path.mkdir(parents=True, exist_ok=True)
    foreign = TlsFiles.in_dir(tmp_path)
    foreign.create(datetime.datetime.now(datetime.UTC), [server.host])
    yield (
        "client certificate of another CA",
        grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=foreign.key.read_bytes(),
            certificate_chain=foreign.cert.read_bytes(),
        ),
    )


# -- the tests --------------------------------------------------------------------------------


def test_master_http_hands_out_no_file_id_and_takes_no_write(
    s3_server: EmbeddedS3, s3_client: Any, bucket: str, playlist: str
) -> None:
    master = f"http://{s3_server.host}:{s3_server.ports.master}"
    assigned: list[str] = []
    for method in ("GET", "POST"):
        status, body = send(method, master + "/dir/assign")
        if b'"fid"' in body:
            assign = json.loads(body)
            headers = {"Authorization": "BEARER " + assign["auth"]} if assign.get("auth") else {}
            write, _ = send("PUT", f"http://{assign['url']}/{assign['fid']}", EVIL, headers)
            assigned.append(f"{method} /dir/assign -> {assign['fid']}, volume PUT -> {write}")
        assert refused(status), (method, status, body)
    upload, headers = multipart(EVIL)
    status, body = send("POST", master + "/submit", upload, headers)
    assert refused(status) and b'"fid"' not in body, (status, body)
    for path in ("/vol/grow?count=1", f"/col/delete?collection={bucket}", "/vol/vacuum"):
        status, body = send("GET", master + path)
        assert refused(status), (path, status, body)
    assert not assigned
    assert read_back(s3_client, bucket) == PLAYLIST


def test_volume_server_refuses_unsigned_and_forged_requests(
    s3_server: EmbeddedS3, s3_client: Any, bucket: str, playlist: str, tmp_path: Path
) -> None:
    fid = chunk_fid(s3_server, bucket, playlist, tmp_path)
    volume = f"http://{s3_server.host}:{s3_server.ports.volume}"
    new_fid = f"{fid.split(',')[0]},{secrets.token_hex(6)}"
    upload, form = multipart(EVIL)
    for auth in ({}, {"Authorization": "BEARER " + forged_jwt(fid)}):
        attempts = {
            "PUT over the chunk": send("PUT", f"{volume}/{fid}", EVIL, auth),
            "POST over the chunk": send("POST", f"{volume}/{fid}", upload, {**form, **auth}),
            "POST a new file": send("POST", f"{volume}/{new_fid}", upload, {**form, **auth}),
            "DELETE the chunk": send("DELETE", f"{volume}/{fid}", None, auth),
            "GET the chunk": send("GET", f"{volume}/{fid}", None, auth),  # reads are signed too
        }
        for what, (status, body) in attempts.items():
            assert refused(status), (what, auth, status, body)
    assert read_back(s3_client, bucket) == PLAYLIST


def test_filer_http_takes_no_write_and_gives_no_read(
    s3_server: EmbeddedS3, s3_client: Any, bucket: str, playlist: str
) -> None:
    filer = f"http://{s3_server.host}:{s3_server.ports.filer}"
    path = f"/buckets/{bucket}/{playlist}"
    upload, form = multipart(EVIL)
    attempts = {
        "PUT over master.m3u8": send("PUT", filer + path, EVIL),
        "POST over master.m3u8": send("POST", filer + path, upload, form),
        "POST a new file": send("POST", f"{filer}/buckets/{bucket}/shows/evil.m3u8", upload, form),
        "PUT a new file": send("PUT", f"{filer}/buckets/{bucket}/shows/evil2.m3u8", EVIL),
        "DELETE master.m3u8": send("DELETE", filer + path),
        "DELETE the bucket": send("DELETE", f"{filer}/buckets/{bucket}?recursive=true"),
        "PUT the S3 identities": send("PUT", filer + "/etc/iam/identity.json", b"{}"),
        "GET master.m3u8": send("GET", filer + path),
        "list the bucket": send("GET", f"{filer}/buckets/{bucket}/", headers={"Accept": "*/*"}),
    }
    for what, (status, body) in attempts.items():
        assert refused(status), (what, status, body)
    # SeaweedFS also serves the filer's HTTP on a unix socket: it refuses the same way.
    p = s3_server.ports
    for sock in (
        f"/tmp/seaweedfs-filer-{p.filer}.sock",
        str(s3_server.data_dir / "run/filer.sock"),
    ):
        if os.path.exists(sock):
            assert refused(unix_http(sock, "PUT", path, EVIL)), sock
    assert read_back(s3_client, bucket) == PLAYLIST
    assert stored_keys(s3_client, bucket) == [playlist]


def test_grpc_refuses_every_client_without_the_server_certificate(
    s3_server: EmbeddedS3, s3_client: Any, bucket: str, playlist: str, tmp_path: Path
) -> None:
    fid = chunk_fid(s3_server, bucket, playlist, tmp_path)
    directory, name = f"/buckets/{bucket}/{playlist}".rsplit("/", 1)
    writes = {  # one write per component, each of which used to succeed
        "master": ("/master_pb.Seaweed/Assign", pb(1, 1)),
        "volume": ("/volume_server_pb.VolumeServer/BatchDelete", pb(1, fid)),
        "filer": (
            "/filer_pb.SeaweedFiler/CreateEntry",
            create_entry_request(directory, name, EVIL),
        ),
        "s3": ("/messaging_pb.SeaweedS3IamCache/PutIdentity", intruder_identity(0)),
    }
    targets = grpc_targets(s3_server)
    for kind, credentials in attacker_credentials(s3_server, tmp_path / "foreign"):
        outcomes = {
            (target, method): grpc_call(target, method, request, credentials)
            for component, (method, request) in writes.items()
            for target in targets[component]
        }
        assert set(outcomes.values()) == {"UNAVAILABLE"}, (kind, outcomes)  # at the handshake
    assert read_back(s3_client, bucket) == PLAYLIST
    assert s3_refuses(intruder_s3(s3_server, 0), bucket)
    # The ports do speak gRPC: with the server's own certificate a read-only call works.
    tls = s3_server.tls
    ours = grpc.ssl_channel_credentials(
        tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes()
    )
    lookup = pb(1, directory) + pb(2, name)
    for target in targets["filer"]:
        assert (
            grpc_call(target, "/filer_pb.SeaweedFiler/LookupDirectoryEntry", lookup, ours) == "OK"
        )


def test_s3_grpc_cannot_replace_the_s3_identities(
    s3_server: EmbeddedS3, s3_client: Any, bucket: str, playlist: str, tmp_path: Path
) -> None:
    service = "/messaging_pb.SeaweedS3IamCache/"
    calls = [
        ("PutIdentity", intruder_identity(1)),  # a new identity
        ("PutIdentity", intruder_identity(2, name="onair")),  # onair's, with other keys
        ("PutIdentity", intruder_identity(9, name="anonymous")),  # anonymous writes
        ("RemoveIdentity", pb(1, "onair")),
    ]
    for kind, credentials in attacker_credentials(s3_server, tmp_path):
        outcomes = {
            (target, method): grpc_call(target, service + method, request, credentials)
            for target in grpc_targets(s3_server)["s3"]
            for method, request in calls
        }
        assert set(outcomes.values()) == {"UNAVAILABLE"}, (kind, outcomes)
    # The old credentials still read and write; no new identity works; anonymous only reads.
    s3_client.put_object(Bucket=bucket, Key="after.txt", Body=b"still mine")
    assert read_back(s3_client, bucket, "after.txt") == b"still mine"
    assert s3_refuses(intruder_s3(s3_server, 1), bucket)
    assert s3_refuses(intruder_s3(s3_server, 2), bucket)
    status, _ = send("PUT", f"{s3_server.endpoint}/{bucket}/{KEY}", EVIL)
    assert status == 403
    assert read_back(s3_client, bucket) == PLAYLIST


def test_weed_shell_without_the_certificate_changes_nothing(
    s3_server: EmbeddedS3, s3_client: Any, bucket: str, playlist: str, tmp_path: Path
) -> None:
    directory, name = f"/buckets/{bucket}/{playlist}".rsplit("/", 1)
    commands = [
        "s3.configure -user=intruder -access_key=INTRUDER3KEY -secret_key=intruder-secret-3"
        " -actions=Admin -apply",
        f"fs.rm {directory}/{name}",
    ]
    out = weed_shell(s3_server, "\n".join(commands), tmp_path, config_dir=None)
    assert "INTRUDER3KEY" not in out, out
    # An identity applied through the filer reaches S3 a moment later: watch for a second.
    intruder = intruder_s3(s3_server, 3)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert s3_refuses(intruder, bucket)
        time.sleep(0.1)
    assert read_back(s3_client, bucket) == PLAYLIST
    # The same shell with the server's configuration reaches it (so the refusal is the
    # certificate's doing): it reads the entry back.
    assert chunk_fid(s3_server, bucket, playlist, tmp_path)


def test_s3_reads_and_writes_with_credentials_and_anonymous_only_reads(
    s3_server: EmbeddedS3, s3_client: Any, bucket: str, playlist: str
) -> None:
    s3_client.put_object(Bucket=bucket, Key="shows/news/720p/i.m3u8", Body=b"#EXTM3U\n")
    assert read_back(s3_client, bucket, "shows/news/720p/i.m3u8") == b"#EXTM3U\n"
    assert stored_keys(s3_client, bucket) == sorted([playlist, "shows/news/720p/i.m3u8"])
    url = f"{s3_server.endpoint}/{bucket}/{playlist}"
    assert send("GET", url) == (200, PLAYLIST)  # players fetch playlists without credentials
    assert send("PUT", url, EVIL)[0] == 403
    assert send("DELETE", url)[0] == 403
    assert send("GET", f"{s3_server.endpoint}/{bucket}?list-type=2")[0] == 403
    iam = b"Action=CreateAccessKey&UserName=anonymous&Version=2010-05-08"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert refused(send("POST", f"{s3_server.endpoint}/", iam, form)[0])  # S3's IAM API
    assert read_back(s3_client, bucket) == PLAYLIST
    s3_client.delete_object(Bucket=bucket, Key="shows/news/720p/i.m3u8")
    assert stored_keys(s3_client, bucket) == [playlist]
