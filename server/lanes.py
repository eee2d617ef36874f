"""A worker's requests in two lanes: small ones on the event loop's thread, large ones on a
bulk thread, so that small requests never queue behind large ones and pay no thread hand-off.

waitress reads and parses requests on its event loop and hands each to a pool of threads. A
hand-off costs: the loop and the thread take turns at the GIL, and each turn is a thread
switch. Under `wrk` at c=8 on the 28x28 PNG (two workers), requests served by one thread per
worker cost 0.74 ms of CPU each, 0.52 ms served on the loop itself (3,635 against 2,573 req/s,
medians of three interleaved rounds). But a single lane of any kind makes a digit wait behind
a whole batch. So a request with a body of `bulk_from` bytes or more (a batch, a photo) goes to
the bulk lane's thread(s), and any other (a digit, a canvas drawing, a health check, a scrape)
runs on the loop's thread between its passes over the sockets, holding the loop briefly (in
process: a 28x28 PNG request 0.32 ms; preprocessing a 280x280 canvas 1.5 ms). The loop also
accepts every waiting connection at once (`accept_all`), since its passes are longer than
waitress's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from waitress.task import ThreadedTaskDispatcher

log = logging.getLogger("server")

# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). With
# a batch on the bulk thread, a small request waits up to that long each time it needs the GIL
# back. Under `wrk -c4` on the 28x28 PNG beside a client sending 256-image batches (5 s, six
# rounds each), the small requests' p99: 6.2-13.5 ms (median 9.6) at 1 ms, 6.9-23.2 ms
# (median 11.3) at 5 ms; their rate 1,081-2,256 against 1,778-2,349 req/s and the batches
# 46-84 against 48-84 per run, both within the noise. With small requests alone, 3,775
# against 3,661 req/s (three rounds).
SWITCH_INTERVAL = 0.001

# How long the loop serves quick requests before it looks at its sockets again. Serving all it
# had read in one go made a request that came a moment too late wait for the whole batch and
# then its own turn in the next one: with 16 connections sending 280x280 PNGs to one worker,
# p99 63-73 ms against 45-47 ms with requests on a thread; a slice keeps the order of arrival.
SLICE = 0.005


class QueueWatch:
    """Takes the place of waitress's queue logger, which writes a warning for every request
    that finds all threads busy: under load that is most requests (4,649 lines in a 7 s run at
    c=8, under py-spy), for a wait that is how the server works, not an incident. Here each
    wait (in the quick lane: each request that finds others before it) is counted in /metrics,
    and the log gets a line when waits begin and after that at most one summary a minute.

    Each lane calls `warning` from one thread at a time (the bulk lane with its lock held)."""

    def __init__(self, lane: str, counter, interval: float = 60.0):
        self.lane = lane
        self.counter = counter
        self.interval = interval
        self.waits = 0
        self.deepest = 0
        self.next_report = 0.0  # the first wait is reported at once

    def warning(self, msg: str, depth: int, *args) -> None:
        self.counter.inc()
        self.waits += 1
        self.deepest = max(self.deepest, depth)
        now = time.monotonic()
        if now < self.next_report:
            return
        log.warning(
            "%s lane: %d request(s) waited for their turn since the last report (longest "
            "queue: %d); all waits are counted in /metrics, http_requests_queued_total",
            self.lane,
            self.waits,
            self.deepest,
        )
        self.waits = self.deepest = 0
        self.next_report = now + self.interval


class Lane(ThreadedTaskDispatcher):
    """waitress's own thread pool, with threads named after the lane (as py-spy shows them)."""

    def __init__(self, name: str, threads: int, queued_counter):
        super().__init__()
        self.name = name
        self.queue_logger = QueueWatch(name, queued_counter)
        self.set_thread_count(threads)

    def start_new_thread(self, target, thread_no):
        name = f"{self.name}-{thread_no}"
        threading.Thread(target=target, name=name, args=(thread_no,), daemon=True).start()


class Lanes:
    """The task dispatcher waitress is given (`create_server(_dispatcher=...)`): it is handed
    a connection whose next request has been read in full.

    A quick request waits in `pending` and runs on the event loop's own thread, which serves
    them in order of arrival between its passes over the sockets (`run_pending`): no hand-off
    to another thread, no turns at the GIL with it. A bulk request goes to the bulk lane's
    threads. The thread that builds Lanes must be the one that runs the loop."""

    def __init__(self, bulk_threads: int, bulk_from: int, queued):
        self.bulk_from = bulk_from
        self.loop_thread = threading.get_ident()
        self.pending: deque = deque()
        self.quick_watch = QueueWatch("quick", queued.labels(lane="quick"))
        self.bulk = Lane("bulk", bulk_threads, queued.labels(lane="bulk"))

    def is_bulk(self, channel) -> bool:
        # Chunked bodies count with their framing: close enough for a threshold.
        return channel.requests[0].body_bytes_received >= self.bulk_from

    def add_task(self, channel) -> None:
        # From any other thread this is a request pipelined behind a bulk one on the same
        # connection, re-queued by the bulk thread that served it: it stays there.
        if self.is_bulk(channel) or threading.get_ident() != self.loop_thread:
            self.bulk.add_task(channel)
            return
        if self.pending:
            self.quick_watch.warning("", len(self.pending))
        self.pending.append(channel)

    def run_pending(self, budget: float = SLICE) -> None:
        """Serves waiting quick requests in arrival order for about `budget` seconds; the loop
        then reads its sockets (without waiting while requests remain here) and comes back."""
        end = time.perf_counter() + budget
        while self.pending and time.perf_counter() < end:
            channel = self.pending.popleft()
            try:
                channel.service()
            except BaseException:  # as waitress's own task threads do: log, serve on
                log.exception("Exception when servicing %r", channel)

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        if cancel_pending:
            while self.pending:
                self.pending.popleft().cancel()
        return self.bulk.shutdown(cancel_pending, timeout)


def accept_all(server) -> None:
    """Makes a waitress server accept every waiting connection when its socket is readable.

    waitress accepts one connection per pass of its loop. With quick requests served between
    passes a pass can last tens of milliseconds under load, and a burst of new connections
    then waited one pass each: with 16 connections opened at once against one worker busy with
    280x280 PNGs, the first requests waited up to 380 ms (p99 of the run 167-173 ms, against 52-56
    ms with requests on threads)."""
    one = server.handle_accept

    def every_waiting() -> None:
        while len(server._map) < server.adj.connection_limit:
            before = len(server._map)
            one()
            if len(server._map) == before:  # none left, or a failed accept (logged)
                return

    server.handle_accept = every_waiting
