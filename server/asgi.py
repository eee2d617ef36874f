"""The WSGI app behind an ASGI server: a request reaches the app only once it is all in.

`python -m server` runs granian (server/__main__.py), which reads and parses HTTP in Rust, off
the GIL, and hands each request to `BufferedWSGI` on the worker's asyncio loop. That loop and
granian's runtime only move bytes; every request runs the app on a thread, so nothing a
request does (a slow decode, a large batch) holds up accepting and reading other connections.

What the bridge adds to plain WSGI serving:
- a body whose Content-Length is over `max_body` is refused with 413 before any of it is read
  (a client that sent `Expect: 100-continue` never gets its 100); a chunked body is refused as
  soon as it passes the limit; a body of exactly `max_body` bytes is accepted;
- the body is received with a deadline (`body_timeout`): a client that trickles its body holds
  a coroutine, not a thread, and gets 408 when the deadline passes (granian's header read
  timeout does the same for the headers);
- a request with both Content-Length and Transfer-Encoding is refused with 400 and its
  connection closed (RFC 9112, section 6.1: a possible request-smuggling attempt), and so is a
  Transfer-Encoding other than chunked;
- the app runs on three lanes of threads: requests without a body (health checks, scrapes, the
  page) on one, small bodies (a digit, a canvas) on another, bodies of `bulk_from` bytes or more
  (batches, photos) on the third, so that neither a batch nor a slow image holds up a health
  check, and a digit never queues behind a batch;
- once the worker has been idle for `trim_after` seconds after requests with a body, the memory
  they freed inside the heap goes back to the system (server/memory.py), so a worker at rest
  holds what it holds at rest, not what its last burst of photos or batches left behind.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from server import memory
from server.app import SECURITY_HEADERS

log = logging.getLogger("server")

# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). With
# a batch on the bulk thread, a small request waits up to that long each time it needs the GIL
# back. Under `wrk -c4` on the 28x28 PNG beside a client sending 256-image batches (5 s, six
# rounds each), the small requests' p99: 6.2-13.5 ms (median 9.6) at 1 ms, 6.9-23.2 ms
# (median 11.3) at 5 ms, with no loss of throughput on either side.
SWITCH_INTERVAL = 0.001

LANES = ("light", "quick", "bulk")
# Seconds without a request with a body after which a worker trims its heap: long enough that
# a steady stream of requests never pays for it, short enough that a scrape of its memory a
# moment after a burst sees the worker at rest.
TRIM_AFTER = 0.5


def json_error(status: int, code: str, message: str, extra_headers=()) -> tuple[int, list, bytes]:
    """An answer the bridge gives itself, in the app's error shape (server/errors.py)."""
    body = json.dumps({"error": message, "code": code}).encode() + b"\n"
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
        *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()),
        *extra_headers,
    ]
    return status, headers, body


class Lane:
    """A pool of threads for one kind of request, and how many of its requests are in flight
    (touched only on the event loop's thread)."""

    def __init__(self, name: str, threads: int, queued=None):
        self.name = name
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix=f"{name}-lane")
        self.in_flight = 0
        self.queued = queued  # a counter of requests that found every thread busy

    async def run(self, fn: Callable, *args):
        if self.in_flight >= self.threads and self.queued is not None:
            self.queued.inc()
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            self.in_flight -= 1


class BufferedWSGI:
    """An ASGI app that serves `app` (WSGI) as the module docstring says.

    `queued(lane)` gives the counter of requests that waited for their lane's thread;
    `on_startup` (a coroutine function) is run as a task of the event loop when the ASGI
    server starts the app, `on_shutdown` is called when it stops the app (lifespan)."""

    def __init__(
        self,
        app,
        *,
        max_body: int,
        body_timeout: float,
        bulk_from: int,
        bulk_threads: int = 1,
        trim_after: float = TRIM_AFTER,
        queued: Callable[[str], object] | None = None,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], None] | None = None,
    ):
        self.app = app
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.bulk_from = bulk_from
        threads = {"light": 1, "quick": 1, "bulk": bulk_threads}
        self.lanes = {n: Lane(n, threads[n], queued(n) if queued else None) for n in LANES}
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.tasks: set[asyncio.Task] = set()  # referenced until done (asyncio keeps weak refs)
        self.trim_after = trim_after
        self.last_work = 0.0  # time.monotonic() at the end of the last request with a body
        self.trim_timer: asyncio.TimerHandle | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.on_startup is not None:
                    task = asyncio.get_running_loop().create_task(self.on_startup())
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def close(self) -> None:
        """Stops the lanes' threads and the app's own work. The ASGI server calls this once it
        has answered every request in flight, so there is nothing to wait for."""
        if self.trim_timer is not None:
            self.trim_timer.cancel()
            self.trim_timer = None
        for lane in self.lanes.values():
            lane.pool.shutdown(wait=False)
        if self.on_shutdown is not None:
            self.on_shutdown()

    async def http(self, scope, receive, send) -> None:
        headers: dict[bytes, list[bytes]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.lower(), []).append(value)
        answer = self.refusal(headers)
        if answer is None:
            body = await self.receive_body(receive, headers)
            if isinstance(body, tuple):  # refused while reading, or the client left
                answer = body
            else:
                lane = self.lane_for(len(body), headers)
                environ = self.environ(scope, headers, body)
                answer = await self.lanes[lane].run(self.call, environ)
                if lane != "light":
                    self.worked()
        if answer is None:
            return
        status, response_headers, data = answer
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": data})

    def worked(self) -> None:
        """Notes the end of a request with a body; the heap is trimmed once the worker has
        had none for `trim_after` seconds. One timer at a time, however many requests end."""
        self.last_work = time.monotonic()
        if self.trim_timer is None:
            self.trim_timer = asyncio.get_running_loop().call_later(
                self.trim_after, self.trim_when_idle
            )

    def trim_when_idle(self) -> None:
        busy = any(self.lanes[n].in_flight for n in ("quick", "bulk"))
        wait = self.last_work + self.trim_after - time.monotonic()
        if busy or wait > 0:
            self.trim_timer = asyncio.get_running_loop().call_later(
                self.trim_after if busy else wait, self.trim_when_idle
            )
            return
        self.trim_timer = None
        # On the light lane's thread: the event loop keeps moving bytes meanwhile.
        self.lanes["light"].pool.submit(memory.trim)

    def refusal(self, headers: dict) -> tuple | None:
        """An answer for a request refused on its headers alone, before its body is read."""
        codings = headers.get(b"transfer-encoding")
        if codings and b"content-length" in headers:
            return json_error(
                400,
                "bad_request",
                "Content-Length and Transfer-Encoding together: send one of them.",
            )
        if codings and [c.strip().lower() for c in b",".join(codings).split(b",")] != [b"chunked"]:
            # Only chunked framing is understood. RFC 9112 suggests 501, but the request is
            # the client's to fix, and nothing a client sends gets a 5xx from us.
            return json_error(400, "bad_request", "Transfer-Encoding other than chunked.")
        lengths = headers.get(b"content-length")
        if lengths:
            try:
                declared = int(lengths[0])
            except ValueError:
                return json_error(400, "bad_request", "Content-Length is not a number.")
            if declared > self.max_body:
                return self.too_large()
        return None

    def too_large(self) -> tuple:
        return json_error(
            413,
            "request_entity_too_large",
            f"The request body is over the limit of {self.max_body:,} bytes.",
        )

    async def receive_body(self, receive, headers: dict) -> bytes | tuple | None:
        """The whole body, or an answer that refuses it, or None when the client went away."""
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        return self.too_large()
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            return json_error(
                408,
                "request_timeout",
                f"The request body did not arrive within {self.body_timeout:g} s.",
            )
        return b"".join(chunks)

    def lane_for(self, size: int, headers: dict) -> str:
        if size >= self.bulk_from:
            return "bulk"
        if size or b"content-type" in headers:
            return "quick"
        return "light"

    @staticmethod
    def environ(scope: dict, headers: dict, body: bytes) -> dict:
        server = scope.get("server") or ("localhost", 80)
        client = scope.get("client") or ("", 0)
        environ = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": scope.get("root_path", "").encode().decode("latin-1"),
            # WSGI carries the path as the request's bytes read as latin-1 (PEP 3333).
            "PATH_INFO": scope["path"].encode().decode("latin-1"),
            "QUERY_STRING": scope["query_string"].decode("latin-1"),
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": str(server[1]),
            "REMOTE_ADDR": str(client[0]),
            "REMOTE_PORT": str(client[1]),
            "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"),
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for name, values in headers.items():
            key = name.decode("latin-1").upper().replace("-", "_")
            value = ",".join(v.decode("latin-1") for v in values)
            if key == "CONTENT_TYPE":
                environ[key] = value
            elif key not in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                environ["HTTP_" + key] = value
        return environ

    def call(self, environ: dict) -> tuple[int, list, bytes]:
        """Runs the WSGI app on a lane's thread: status, headers and the whole body."""
        started: list = []
        chunks: list[bytes] = []

        def start_response(status, response_headers, exc_info=None):
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, response_headers]
            return chunks.append

        try:
            result = self.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception:
            # A bug, not the client's fault: logged with its traceback, answered without it.
            method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
            log.exception("unhandled error on %s %s", method, path)
            return json_error(500, "internal", "Internal error; it has been logged.")
        status, response_headers = started
        encoded = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response_headers]
        return int(status[:3]), encoded, b"".join(chunks)
