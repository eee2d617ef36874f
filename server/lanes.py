"""A worker's request threads, in two lanes: small requests never queue behind large ones.

Under load, every request thread past the first makes each request dearer: the threads of one
process take turns at the GIL, and each turn is a thread switch. Under `wrk` at c=8 on the 28x28
PNG, one worker with two threads spent 0.89-1.20 ms of CPU per request, with one thread
0.61-0.64 ms. But with a single thread, a small request that arrives behind a 256-image batch
waits for the whole batch. So each worker has a quick lane and a bulk lane, one thread each by
default: a request with a body of `bulk_from` bytes or more (a batch, a photo) goes to the bulk
lane, any other (a digit, a canvas drawing, a health check, a scrape) to the quick lane. While
traffic is of one kind, one thread works; while both kinds come, both do.
"""

from __future__ import annotations

import logging
import threading
import time

from waitress.task import ThreadedTaskDispatcher

log = logging.getLogger("server")

# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). With
# a batch in the bulk lane, a small request in the quick lane waited for the GIL that long at
# each of its hand-offs: under `wrk -c4` beside a client sending 256-image batches, 5 ms gave
# the small requests 753-875 req/s at p50 4.5 ms, 1 ms 1,344-1,675 req/s at p50 1.8-2.5 ms
# (two runs each); 1 ms cost nothing measurable with one lane busy.
SWITCH_INTERVAL = 0.001


class QueueWatch:
    """Takes the place of waitress's queue logger, which writes a warning for every request
    that finds all threads of its lane busy: under load that is most requests (4,649 lines in
    a 7 s run at c=8), for a wait that is how the server works, not an incident. Here each
    wait is counted in /metrics, and the log gets a line when waits begin and after that at
    most one summary a minute.

    waitress calls `warning` with the lane's lock held: no lock of our own is needed."""

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
            "%s lane: %d request(s) waited for a free thread since the last report (deepest "
            "queue: %d); all waits are counted in /metrics, http_requests_queued_total",
            self.lane,
            self.waits,
            self.deepest,
        )
        self.waits = self.deepest = 0
        self.next_report = now + self.interval


class Lane(ThreadedTaskDispatcher):
    """waitress's own dispatcher, with threads named after the lane (as py-spy shows them)."""

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
    a connection whose next request has been read in full, and passes it to a lane."""

    def __init__(self, threads: int, bulk_from: int, queued):
        self.bulk_from = bulk_from
        self.quick = Lane("quick", threads, queued.labels(lane="quick"))
        self.bulk = Lane("bulk", threads, queued.labels(lane="bulk"))

    def lane_of(self, channel) -> Lane:
        request = channel.requests[0]
        # Chunked bodies count with their framing: close enough for a threshold.
        return self.bulk if request.body_bytes_received >= self.bulk_from else self.quick

    def add_task(self, channel) -> None:
        self.lane_of(channel).add_task(channel)

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        self.bulk.set_thread_count(0)  # both lanes stop at once; the second wait is short
        quick = self.quick.shutdown(cancel_pending, timeout)
        return self.bulk.shutdown(cancel_pending, timeout) and quick
