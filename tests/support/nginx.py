"""A real nginx with its RTMP module on loopback, for restream tests.

`NginxRtmp(base_dir)` writes a config of its own under `base_dir` and runs
`nginx -p DIR -c DIR/nginx.conf -e DIR/error.log` in the foreground (`daemon off`),
as the current user (as root, its workers run as root too: `user root;`, so they can
write the recordings). Modules come from Debian's `libnginx-mod-rtmp` and
`libnginx-mod-stream` (`/usr/lib/nginx/modules/`).

RTMP applications:
- `live1`, `live2`: `record all` to `records/<app>/<name>.flv` (`recording(app, key)`);
- `guarded`: `on_publish` to this nginx's own http server, which answers 403, so
  nginx-rtmp refuses every publish (it closes the connection).

RTMPS: an nginx `stream` server terminates TLS on `rtmps_port` and proxies to the RTMP
port, with a certificate for 127.0.0.1 and localhost signed by a CA made here
(`ca_file`, what a client's `OutboundPolicy(ca_file=...)` trusts).

`stop()` ends nginx (SIGTERM, then SIGKILL after a grace); `restart()` starts it again
on the same ports (tests stop a destination mid-live). Ports come from
`tests.support.ports.free_port`.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from packager.s3server import TlsFiles
from tests.support.ports import free_port

NGINX = "nginx"
MODULES_DIR = Path("/usr/lib/nginx/modules")
RTMP_MODULE = MODULES_DIR / "ngx_rtmp_module.so"
STREAM_MODULE = MODULES_DIR / "ngx_stream_module.so"
RECORDING_APPS = ("live1", "live2")
GUARDED_APP = "guarded"
START_SECONDS = 10.0
STOP_GRACE_SECONDS = 5.0

_CONFIG = """\
load_module {rtmp_module};
load_module {stream_module};
{user}
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;

events {{
    worker_connections 256;
}}

rtmp {{
    server {{
        listen 127.0.0.1:{rtmp_port};
        chunk_size 4096;
{applications}
        application {guarded} {{
            live on;
            on_publish http://127.0.0.1:{http_port}/refuse;
        }}
    }}
}}

http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{http_port};
        location /refuse {{
            return 403;
        }}
        location / {{
            return 404;
        }}
    }}
}}

stream {{
    server {{
        listen 127.0.0.1:{rtmps_port} ssl;
        listen 127.0.0.2:{rtmps_port} ssl;  # a loopback address the certificate lacks
        ssl_certificate {dir}/tls/node.crt;
        ssl_certificate_key {dir}/tls/node.key;
        proxy_pass 127.0.0.1:{rtmp_port};
    }}
}}
"""

_RECORDING_APP = """\
        application {app} {{
            live on;
            record all;
            record_path {dir}/records/{app};
            record_unique off;
            record_suffix .flv;
        }}
"""


class NginxError(RuntimeError):
    """nginx did not start; the message holds its error log."""


class NginxRtmp:
    """One nginx-rtmp server on loopback; `start()`/`stop()` or a `with` block."""

    def __init__(self, base_dir: Path) -> None:
        self.dir = base_dir.resolve()
        self.rtmp_port = free_port()
        self.http_port = free_port()
        self.rtmps_port = free_port()
        self.ca_file = self.dir / "tls" / "ca.crt"  # trust this to reach `rtmps_url`
        self.error_log = self.dir / "error.log"
        self.config_file = self.dir / "nginx.conf"
        self._process: subprocess.Popen[bytes] | None = None
        self._prepared = False

    # URLs and files

    def rtmp_url(self, app: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{app}"

    def rtmps_url(self, app: str, host: str = "127.0.0.1") -> str:
        """The TLS front's URL; the certificate is valid for 127.0.0.1 and localhost."""
        return f"rtmps://{host}:{self.rtmps_port}/{app}"

    def record_dir(self, app: str) -> Path:
        return self.dir / "records" / app

    def recording(self, app: str, key: str) -> Path:
        """Where `record all` writes `key`'s publish on `app`: nginx drops a `?query` and
        escapes the name as a URI component (`=` is `%3D`), as `quote(safe="")` does."""
        return self.record_dir(app) / f"{quote(key.split('?', 1)[0], safe='')}.flv"

    def error_log_text(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # Life cycle

    def start(self) -> None:
        """Write the config (once) and start nginx; returns when its ports accept."""
        if self.running:
            return
        if not self._prepared:
            self._prepare()
        self._process = subprocess.Popen(
            [NGINX, "-p", str(self.dir), "-c", str(self.config_file), "-e", str(self.error_log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of pytest reaches us, not nginx directly
        )
        deadline = time.monotonic() + START_SECONDS
        ports = (self.rtmp_port, self.http_port, self.rtmps_port)
        while not all(_accepts(port) for port in ports):
            if self._process.poll() is not None:
                self._process = None
                raise NginxError(f"nginx exited at start:\n{self.error_log_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise NginxError(
                    f"nginx did not listen in {START_SECONDS}s:\n{self.error_log_text()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop nginx (fast shutdown, SIGKILL after a grace) and wait for it. Idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # Workers are in the master's session; make sure none outlives it.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def restart(self) -> None:
        """Stop, then start again on the same ports."""
        self.stop()
        self.start()

    def __enter__(self) -> NginxRtmp:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Setup

    def _prepare(self) -> None:
        for sub in ("tmp", "tls", "logs", *(f"records/{app}" for app in RECORDING_APPS)):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        # The embedded S3's own test CA and certificate (127.0.0.1, ::1, localhost).
        TlsFiles.in_dir(self.dir / "tls").create(datetime.datetime.now(datetime.UTC), [])
        applications = "".join(
            _RECORDING_APP.format(app=app, dir=self.dir) for app in RECORDING_APPS
        )
        self.config_file.write_text(
            _CONFIG.format(
                rtmp_module=RTMP_MODULE,
                stream_module=STREAM_MODULE,
                # As root, nginx's workers would switch to `nobody` and could not write
                # the recordings; as anyone else the directive is ignored (a warning).
                user="user root;" if os.geteuid() == 0 else "",
                dir=self.dir,
                rtmp_port=self.rtmp_port,
                http_port=self.http_port,
                rtmps_port=self.rtmps_port,
                applications=applications,
                guarded=GUARDED_APP,
            )
        )
        self._prepared = True


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
