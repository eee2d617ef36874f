"""server/asgi.py: the ASGI bridge receives a request whole, under a size cap and a deadline,
before the WSGI app runs on a lane's thread. Driven here by hand, as the ASGI spec says a
server drives an app (each assumption the bridge makes of its server is one test)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Counter

from server.asgi import BufferedWSGI

MAX = 1000


def echo_app(environ, start_response):
    """A WSGI app that answers what it saw, and on which thread."""
    body = environ["wsgi.input"].read()
    seen = {
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "length": environ["CONTENT_LENGTH"],
        "body": body.decode("latin-1"),
        "type": environ.get("CONTENT_TYPE"),
        "host": environ.get("HTTP_HOST"),
        "thread": threading.current_thread().name,
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


def bridge(app=echo_app, **kw) -> BufferedWSGI:
    return BufferedWSGI(app, **{"max_body": MAX, "body_timeout": 1, "bulk_from": 100, **kw})


def scope(method="POST", path="/predict", headers=(), query=b"") -> dict:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5555),
    }


def run(app: BufferedWSGI, s: dict, chunks=(), delay: float = 0.0) -> tuple[dict, list[int]]:
    """Drives one request: the body in `chunks` (`delay` seconds apart). Returns the answer
    (status, headers, body) and how many times the app asked for body."""
    asked = [0]
    sent: list[dict] = []

    async def receive():
        i = asked[0]
        asked[0] += 1
        if i >= len(chunks):
            await asyncio.sleep(3600)  # a client that never sends the rest
        await asyncio.sleep(delay)
        return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}

    async def send(message):
        sent.append(message)

    asyncio.run(app(s, receive, send))
    start, body = sent
    answer = {
        "status": start["status"],
        "headers": {k.decode(): v.decode() for k, v in start["headers"]},
        "body": body["body"],
    }
    return answer, asked


def test_a_body_over_the_limit_is_refused_before_any_of_it_is_read():
    # An ASGI server sends `100 Continue` only when the app first asks for the body.
    answer, asked = run(bridge(), scope(headers=[("content-length", str(MAX + 1))]), [b"x"])
    assert answer["status"] == 413 and asked == [0]
    assert json.loads(answer["body"])["code"] == "request_entity_too_large"
    assert answer["headers"]["connection"] == "close"


def test_a_body_of_exactly_the_limit_is_served():
    body = b"y" * MAX
    answer, _ = run(
        bridge(), scope(headers=[("content-length", str(MAX))]), [body[:400], body[400:]]
    )
    assert answer["status"] == 200
    seen = json.loads(answer["body"])
    assert seen["length"] == str(MAX) and len(seen["body"]) == MAX


def test_a_chunked_body_is_refused_once_it_passes_the_limit():
    chunks = [b"z" * 600, b"z" * 600, b"never asked for"]
    answer, asked = run(bridge(), scope(headers=[("transfer-encoding", "chunked")]), chunks)
    assert answer["status"] == 413 and asked == [2]


def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed():
    headers = [("content-length", "5"), ("transfer-encoding", "chunked")]
    answer, asked = run(bridge(), scope(headers=headers), [b"hello"])
    assert answer["status"] == 400 and asked == [0]
    assert answer["headers"]["connection"] == "close"


def test_a_body_that_trickles_past_the_deadline_gets_408():
    # Each piece arrives in time for an idle timeout; the whole body does not.
    chunks = [b"ab"] * 5
    app = bridge(body_timeout=0.3)
    answer, asked = run(app, scope(headers=[("content-length", "10")]), chunks, delay=0.1)
    assert answer["status"] == 408 and 2 <= asked[0] < 5
    assert json.loads(answer["body"])["code"] == "request_timeout"


def test_requests_run_on_their_lane_and_never_on_the_event_loop():
    app = bridge(bulk_from=100)
    loop_thread = threading.current_thread().name  # asyncio.run runs the loop here
    lanes = {}
    for name, s, chunks in (
        ("light", scope("GET", "/healthz"), [b""]),
        ("quick", scope(headers=[("content-type", "image/png")]), [b"p" * 99]),
        ("bulk", scope(headers=[("content-type", "image/png")]), [b"p" * 100]),
    ):
        answer, _ = run(app, s, chunks)
        lanes[name] = json.loads(answer["body"])["thread"]
    assert all(thread.startswith(f"{name}-lane") for name, thread in lanes.items()), lanes
    assert loop_thread not in lanes.values()


def test_the_environ_carries_path_query_headers_and_body():
    s = scope(
        path="/caf\u00e9",
        query=b"include_image=true",
        headers=[("content-type", "image/png"), ("host", "example"), ("x-a", "1"), ("x-a", "2")],
    )
    answer, _ = run(bridge(), s, [b"abc"])
    seen = json.loads(answer["body"])
    assert seen["path"] == "/caf\u00e9".encode().decode("latin-1")  # PEP 3333: bytes as latin-1
    assert seen["query"] == "include_image=true" and seen["type"] == "image/png"
    assert seen["body"] == "abc" and seen["length"] == "3" and seen["host"] == "example"


def test_an_app_that_raises_gets_a_json_500_and_the_error_is_logged(caplog):
    def broken(environ, start_response):
        raise RuntimeError("bug")

    answer, _ = run(bridge(broken), scope(), [b""])
    assert answer["status"] == 500 and json.loads(answer["body"])["code"] == "internal"
    assert "RuntimeError: bug" in caplog.text


def test_requests_that_find_their_lane_busy_are_counted():
    registry = CollectorRegistry()
    counter = Counter("queued", "test", ["lane"], registry=registry)
    release = threading.Event()

    def slow(environ, start_response):
        release.wait(5)
        start_response("200 OK", [])
        return [b""]

    app = bridge(slow, queued=lambda lane: counter.labels(lane=lane))

    async def both():
        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            pass

        first = asyncio.create_task(app(scope("GET", "/a"), receive, send))
        second = asyncio.create_task(app(scope("GET", "/b"), receive, send))
        await asyncio.sleep(0.1)
        release.set()
        await asyncio.gather(first, second)

    asyncio.run(both())
    assert registry.get_sample_value("queued_total", {"lane": "light"}) == 1
    assert registry.get_sample_value("queued_total", {"lane": "quick"}) == 0


def test_lifespan_shutdown_stops_the_lanes_and_the_app():
    stopped = []
    app = bridge(on_shutdown=lambda: stopped.append(True))
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message["type"])

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert stopped == [True]
    for lane in app.lanes.values():
        with pytest.raises(RuntimeError):  # a stopped executor takes no more work
            lane.pool.submit(print)


def serve_in_one_loop(app: BufferedWSGI, steps) -> None:
    """Runs `steps` (coroutine functions given a `request(scope, body)` coroutine) in order on
    one event loop, as a worker's requests are."""

    async def request(s: dict, body: bytes) -> None:
        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            pass

        await app(s, receive, send)

    async def main():
        for step in steps:
            await step(request)

    asyncio.run(main())


def test_the_heap_is_trimmed_once_the_worker_is_idle_after_requests_with_a_body(monkeypatch):
    trims: list[tuple[float, str]] = []
    monkeypatch.setattr(
        "server.asgi.memory.trim",
        lambda: trims.append((time.monotonic(), threading.current_thread().name)),
    )
    app = bridge(trim_after=0.5)
    ends: list[float] = []

    async def three_uploads(request):
        for _ in range(3):
            await request(scope(headers=[("content-type", "image/png")]), b"x" * 150)
            ends.append(time.monotonic())
            await asyncio.sleep(0.05)  # far closer together than trim_after: no trim between

    async def health_checks_then_rest(request):
        for _ in range(3):  # bodiless requests are not work that leaves memory behind
            await request(scope("GET", "/healthz"), b"")
        await asyncio.sleep(1.0)

    serve_in_one_loop(app, [three_uploads, health_checks_then_rest])
    assert len(trims) == 1
    when, thread = trims[0]
    assert when >= ends[-1] + 0.5
    assert thread.startswith("light-lane")  # off the event loop


def test_the_heap_is_not_trimmed_while_a_request_runs(monkeypatch):
    trims: list[float] = []
    monkeypatch.setattr("server.asgi.memory.trim", lambda: trims.append(time.monotonic()))

    def slow(environ, start_response):
        time.sleep(0.4)
        start_response("200 OK", [])
        return [b""]

    app = bridge(slow, trim_after=0.1)
    spans: list[tuple[float, float]] = []

    async def quick_then_slow(request):
        await request(scope(headers=[("content-type", "image/png")]), b"x")
        t0 = time.monotonic()
        await request(scope(headers=[("content-type", "image/png")]), b"x")
        spans.append((t0, time.monotonic()))
        await asyncio.sleep(0.6)

    serve_in_one_loop(app, [quick_then_slow])
    ((start, end),) = spans
    assert trims and all(not start < t < end for t in trims)
    assert trims[-1] >= end + 0.1
