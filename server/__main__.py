"""python -m server: the digit server under waitress.

Exit status 2 when the bundle is missing, altered or fails its self-test, or when the asked-for
device cannot be used. SIGTERM and SIGINT stop accepting connections, let requests in flight
finish, then exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings
from http import HTTPStatus

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

from server import SECURITY_HEADERS, create_app, errors, metrics
from server import manifest as manifest_mod
from server.answers import to_json
from server.config import ServerConfig
from server.ensemble import DeviceError, SelfTestError
from server.lanes import SWITCH_INTERVAL, Lanes, accept_all
from server.manifest import ManifestError

log = logging.getLogger("server")


class JsonErrorTask(ErrorTask):
    """Errors waitress answers itself (body over the limit, malformed HTTP) as JSON too."""

    def execute(self):
        e = self.request.error
        err = errors.protocol_error(e.code, e.reason, e.body)
        body = to_json(err.body())
        self.status = f"{err.status} {HTTPStatus(err.status).phrase}"
        self.response_headers.extend(
            [
                ("Content-Type", "application/json"),
                ("Cache-Control", "no-store"),
                *SECURITY_HEADERS.items(),
            ]
        )
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask

    def _flush_outbufs_below_high_watermark(self):
        # waitress waits here, in a task thread, for its loop to send a response buffered past
        # 16 MiB. A quick-lane request runs on the loop's own thread, where that wait would
        # never end: there, send what the socket takes and buffer the rest (the quick lane's
        # answers are kilobytes).
        if threading.get_ident() == self.server.task_dispatcher.loop_thread:
            with self.outbuf_lock:
                self._flush_exception(self._flush_some, do_close=False)
            return
        super()._flush_outbufs_below_high_watermark()


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
        help="server processes sharing the port (default: %(default)s)",
    )
    p.add_argument(
        "--bulk-threads",
        type=int,
        default=d.bulk_threads,
        help="threads per worker for bulk requests (batches, photos); the others run on the "
        "worker's event loop (default: %(default)s)",
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
        help="processes per worker that preprocess slices of large batches, 0 for none "
        "(default: %(default)s)",
    )
    p.add_argument("--max-body", type=int, default=d.max_body, help="bytes per request")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="pixels per image")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="images per request")
    p.add_argument(
        "--channel-timeout",
        type=int,
        default=d.channel_timeout,
        help="seconds an idle or stalled connection is kept (default: %(default)s)",
    )
    p.add_argument("--connection-limit", type=int, default=d.connection_limit)
    p.add_argument("--access-log", action="store_true", help="log one line per request")
    args = p.parse_args(argv)
    try:
        return ServerConfig(**vars(args))
    except ValueError as e:
        p.error(str(e))


def _busy(channel) -> bool:
    return isinstance(channel, HTTPChannel) and bool(
        channel.requests or channel.request is not None or channel.total_outbufs_len
    )


def drain(server, stopping: threading.Event, grace: float) -> None:
    """waitress's loop, with the quick lane's requests served between its passes
    (server/lanes.py), until a stop is asked for and no request is in flight any more.

    On a stop the listening socket closes first (new connections are refused), then requests
    already received are answered and flushed; idle keep-alive connections do not hold us."""
    adj, lanes, deadline = server.adj, server.task_dispatcher, None
    while True:
        wasyncore.loop(
            # Quick requests still waiting (server/lanes.py): look at the sockets, do not wait.
            timeout=0 if lanes.pending else adj.asyncore_loop_timeout,
            map=server._map,
            use_poll=adj.asyncore_use_poll,
            count=1,
        )
        lanes.run_pending()
        if not stopping.is_set():
            continue
        if deadline is None:
            deadline = time.monotonic() + grace
            wasyncore.dispatcher.close(server)  # the listener only; the trigger stays
        if not any(_busy(c) for c in list(server._map.values())) or time.monotonic() > deadline:
            break
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
    wasyncore.close_all(server._map)


def run_worker(config: ServerConfig, sock: socket.socket | None = None) -> int:
    """One process: the app under waitress, on `sock` if given, until SIGTERM or SIGINT."""
    try:
        app = create_app(config)
    except (ManifestError, DeviceError, SelfTestError) as e:
        log.error("cannot start: %s", e)
        return 2
    # Everything loaded so far lives as long as the process: keep it out of the cyclic
    # garbage collector's way, so collections stay short under load.
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL)
    where = {"sockets": [sock]} if sock else {"host": config.host, "port": config.port}
    server = create_server(
        app,
        **where,
        # Built on this thread, which runs the loop (drain) and so the quick lane.
        _dispatcher=Lanes(
            config.bulk_threads, config.bulk_from, app.extensions["digits"].metrics.queued
        ),
        connection_limit=config.connection_limit,
        channel_timeout=config.channel_timeout,
        # How often stalled connections are looked for; waitress's default is every 30 s.
        cleanup_interval=max(1, min(30, config.channel_timeout // 2)),
        max_request_body_size=config.max_body,
        # Bodies stay in memory: waitress would spill anything over 512 KiB to a temp file.
        inbuf_overflow=config.max_body + 65536,
        clear_untrusted_proxy_headers=True,
        ident="digits",
    )
    server.channel_class = JsonErrorChannel
    accept_all(server)
    if sock is None:
        log.info(
            "serving on http://%s:%s (quick requests on the event loop, %d bulk thread(s))",
            server.effective_host,
            server.effective_port,
            config.bulk_threads,
        )

    stopping = threading.Event()

    def stop(signum, frame):
        log.info("signal %d: finishing requests in flight, then exiting", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    helpers = app.extensions["digits"].predictor.helpers
    if helpers is not None:
        helpers.start()
    drain(server, stopping, grace=max(10, config.channel_timeout))
    if helpers is not None:
        helpers.close()
    log.info("stopped")
    return 0


def _reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def serve(config: ServerConfig) -> int:
    if config.workers == 1:
        return run_worker(config)
    # Several processes on one port: Python's GIL lets one process use about one core, and
    # threads contending for it cost more CPU than they add (see README, Benchmarks).
    try:
        manifest_mod.load(config.artifacts)  # a broken bundle fails here, once, not N times
    except ManifestError as e:
        log.error("cannot start: %s", e)
        return 2
    # Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads connections
    # evenly; with one shared socket, whichever worker woke first took whole bursts of them.
    # This socket only holds the port (it never listens, so it gets no connections).
    holder = _reuseport_socket(config.host, config.port)
    host, port = holder.getsockname()[:2]
    # A scrape of /metrics reaches one worker; it reports them all from their shared files.
    own_metrics_dir = metrics.MULTIPROCESS_DIR not in os.environ
    if own_metrics_dir:
        metrics.share_between_processes(tempfile.mkdtemp(prefix="digits-metrics-"))
    children = []
    for _ in range(config.workers):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                sock = _reuseport_socket(host, port)
                sock.listen(1024)
                code = run_worker(config, sock)
            finally:
                os._exit(code)
        children.append(pid)
    log.info(
        "serving on http://%s:%s (%d workers, each: quick requests on its event loop, "
        "%d bulk thread(s))",
        host,
        port,
        config.workers,
        config.bulk_threads,
    )

    stopping = False

    def forward(signum, frame):
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    while children:
        pid, status = os.wait()
        if pid not in children:
            # A worker's orphan (its batch helpers' fork server or resource tracker), handed to
            # us when we run as PID 1, as in a container: reaped, nothing more.
            continue
        children.remove(pid)
        metrics.process_exited(pid)
        code = os.waitstatus_to_exitcode(status)
        worst = max(worst, code if code > 0 else 0)
        if not stopping:  # a worker died on its own: stop the rest rather than limp on
            log.error("worker %d exited with %d; stopping", pid, code)
            forward(signal.SIGTERM, None)
    holder.close()
    if own_metrics_dir:
        shutil.rmtree(os.environ[metrics.MULTIPROCESS_DIR], ignore_errors=True)
    log.info("stopped")
    return worst


def main(argv: list[str] | None = None) -> int:
    # Pillow warns about odd files (oversized tags, huge sizes) that we refuse or handle
    # anyway; one warning per hostile upload would flood the log.
    warnings.filterwarnings("ignore", module="PIL")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return serve(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
