"""python -m server: the digit server under granian, one worker process per core.

granian's master process binds the port and starts the workers (server/worker.py); each worker
serves the app through server/asgi.py. A worker that dies is replaced; if the same worker dies
again within 5.5 s (a crash loop), the server stops with exit status 1. A worker killed by the
kernel with its master (prctl) never outlives it, and a worker's batch helpers never outlive
the worker (server/batch_pool.py).

Exit status 2 when the bundle is missing, altered or fails its self-test, or when the asked-for
device cannot be used. SIGTERM and SIGINT stop accepting connections, let requests in flight
finish (10 s at most), then exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import shutil
import socket
import sys
import tempfile
import warnings
from pathlib import Path

from server import manifest as manifest_mod
from server.config import METRICS_DIR_VARIABLE, ServerConfig, command_environment
from server.manifest import ManifestError

log = logging.getLogger("server")

# How long a stopping worker may take to finish its requests in flight before it is killed
# (a 256-image batch takes about a second). It also bounds a stop that reaches a worker
# granian is still starting, which can miss the signal.
STOP_GRACE = 10


def parse_args(argv: list[str] | None) -> ServerConfig:
    d = ServerConfig()
    p = argparse.ArgumentParser(
        prog="python -m server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default=d.host, help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="0 picks a free port")
    p.add_argument("--artifacts", default=str(d.artifacts), help="bundle directory")
    p.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="onnxruntime threads per inference (default: %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=d.workers,
        help="worker processes (default: one per core this process may use, %(default)s)",
    )
    p.add_argument(
        "--bulk-threads",
        type=int,
        default=d.bulk_threads,
        help="threads per worker for bulk requests (batches, photos); bodiless and small "
        "requests have a thread each (default: %(default)s)",
    )
    p.add_argument(
        "--bulk-from",
        type=int,
        default=d.bulk_from,
        help="request body size in bytes from which a request is served in the bulk lane "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--batch-helpers",
        type=int,
        default=d.batch_helpers,
        help="processes per worker that preprocess slices of large batches, started on the "
        "first one; 0 for none (default: %(default)s)",
    )
    p.add_argument("--max-body", type=int, default=d.max_body, help="bytes per request")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="pixels per image")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="images per request")
    p.add_argument(
        "--header-timeout",
        type=int,
        default=d.header_timeout,
        help="seconds a client has to send a request's headers, at most 60 (default: %(default)s)",
    )
    p.add_argument(
        "--body-timeout",
        type=int,
        default=d.body_timeout,
        help="seconds a client has to send a request's body (default: %(default)s)",
    )
    p.add_argument("--access-log", action="store_true", help="log one line per request")
    args = p.parse_args(argv)
    try:
        return ServerConfig(**vars(args))
    except ValueError as e:
        p.error(str(e))


def _free_port(host: str) -> int:
    """A port the kernel says is free. granian binds the port itself and logs the number it
    was given, so port 0 is resolved here (a race with another process is possible, and then
    the start fails with an address in use)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve(config: ServerConfig) -> int:
    # Imported here, after command_environment(): onnxruntime reads its settings on import.
    from server.ensemble import DeviceError, check_device

    # A broken bundle or a missing CUDA provider fails here, once, before any worker starts.
    try:
        manifest_mod.load(config.artifacts)
        check_device(config.device)
    except (ManifestError, DeviceError) as e:
        log.error("cannot start: %s", e)
        return 2
    port = config.port or _free_port(config.host)
    # A scrape of /metrics reaches one worker; it reports them all from their files in this
    # directory (server/metrics.py), which the workers inherit with the environment.
    own_metrics_dir = not os.environ.get(METRICS_DIR_VARIABLE)
    if own_metrics_dir:
        os.environ[METRICS_DIR_VARIABLE] = tempfile.mkdtemp(prefix="digits-metrics-")
    else:
        # The operator's directory: a previous run's files would add to this run's counts.
        for stale in Path(os.environ[METRICS_DIR_VARIABLE]).glob("*.db"):
            stale.unlink()
    # The whole app is imported here, once the environment is set and before granian forks
    # the workers, which share its pages instead of importing it each (0.3 s of CPU).
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    from server import worker

    failed_r, failed_w = os.pipe()
    worker.config, worker.failed_fd, worker.master_pid = config, failed_w, os.getpid()
    server = Granian(
        "server.worker:app",
        factory=True,
        interface=Interfaces.ASGI,
        address=config.host,
        port=port,
        workers=config.workers,
        http=HTTPModes.http1,
        websockets=False,
        http1_settings=HTTP1Settings(header_read_timeout=1000 * config.header_timeout),
        respawn_failed_workers=True,
        workers_kill_timeout=STOP_GRACE,
    )
    worker.port = port
    server.on_shutdown(lambda: log.info("stopped"))
    # What the master has built so far lives as long as the workers: out of the cyclic
    # garbage collector's reach, so that a collection in a worker never writes to (and so
    # copies) the pages it shares with the master (Python's gc.freeze documentation). The
    # collector was off while it was built (main): a full collection amid the imports
    # traversed every object made so far, for nothing.
    gc.freeze()
    gc.enable()
    code = 0
    try:
        server.serve()
    except SystemExit as e:  # granian's way out when its workers crash in a loop
        code = e.code if isinstance(e.code, int) else 1
    finally:
        if own_metrics_dir:
            shutil.rmtree(os.environ.pop(METRICS_DIR_VARIABLE), ignore_errors=True)
    os.set_blocking(failed_r, False)
    with contextlib.suppress(BlockingIOError):
        if os.read(failed_r, 1):
            return 2  # a worker could not load the bundle or use the device (logged)
    return code


def main(argv: list[str] | None = None) -> int:
    gc.disable()  # until serve() freezes what start-up built
    # Pillow warns about odd files (oversized tags, huge sizes) that we refuse or handle
    # anyway; one warning per hostile upload would flood the log.
    warnings.filterwarnings("ignore", module="PIL")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = parse_args(argv)
    command_environment()
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
