"""`make cluster-demo`: the many-host layout on one machine, as plain processes.

PostgreSQL (Debian's server, in a temporary directory, on a unix socket), one SeaweedFS
(the embedded S3), three `onair run` hosts on that store and that S3, and a small TCP
round-robin load balancer in front of their RTMP ports. It prints where to publish and
the API of each host, and a project's key; Ctrl-C stops everything. Kill a host (its
pid is printed) while OBS or ffmpeg publishes through the balancer and watch the live
go on on another host after its lease expires (20 s); see README "Scaling out".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from packager.s3server import EmbeddedS3
from tests.support.cluster import Balancer, Host, project_for, shared_backends


async def run(hosts: int, rtmp_port: int, base: Path) -> None:
    with shared_backends(base, "demo") as (store_url, s3):
        await serve(hosts, rtmp_port, base, store_url, s3)


async def serve(hosts: int, rtmp_port: int, base: Path, store_url: str, s3: EmbeddedS3) -> None:
    running: list[Host] = []
    balancer: Balancer | None = None
    try:
        project = project_for(store_url, base)
        running = [Host(f"demo-{i + 1}", base, store_url, s3) for i in range(hosts)]
        for host in running:
            host.start()
        await asyncio.gather(*(host.wait_up() for host in running))
        balancer = Balancer([h.rtmp_port for h in running], listen_port=rtmp_port)
        await balancer.start()
        lines = [
            f"onair cluster demo: {hosts} hosts on one PostgreSQL and one SeaweedFS",
            f"  publish (through the balancer): rtmp://127.0.0.1:{balancer.port}/live/<key>",
            f"  S3: {s3.endpoint}",
            f"  project {project['projectId']}, API key {project['apiKey']}",
        ]
        for host in running:
            assert host.process is not None
            lines.append(
                f"  {host.name}: encoder {host.encoder_id()}, API"
                f" http://127.0.0.1:{host.http_port}/api/v1/projects/{project['projectId']}"
                f" (pid {host.process.pid}, log {host.log_path})"
            )
        lines.append("Ctrl-C stops all.")
        print("\n".join(lines), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if balancer is not None:
            await balancer.stop()
        for host in running:
            host.stop(signal.SIGTERM)
        print("stopped.", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--rtmp-port", type=int, default=1935, help="the balancer's port")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onair-cluster-") as base:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(args.hosts, args.rtmp_port, Path(base)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
