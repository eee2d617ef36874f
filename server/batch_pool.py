"""A pool of helper processes that preprocess slices of a large batch, so that one request can
use every core.

A request runs on one core (the GIL), and about two thirds of a batch's time is preprocessing:
numpy and Pillow calls on small arrays that hold the GIL. The pool's helpers are started by a
fork server (so never forked from a process that already runs threads); a large batch is cut
into slices, the helpers preprocess theirs while the request thread preprocesses and runs the
first, and each slice goes to the models as soon as it is ready.

The pool starts its processes (fork server, resource tracker, helpers) in the background on
the first batch large enough to be cut, so a server that never gets one never runs them. Until
they are up, and after one has died (the pool is then rebuilt), batches are preprocessed in
the request thread alone: slower, never lost. A helper exits as soon as its worker is gone,
however the worker ends; then the fork server and the resource tracker, which exit once no
process holds their pipes, follow: nothing outlives the worker.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import select
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from server.errors import ApiError
from server.manifest import InputSpec
from server.preprocess import Preprocessed, preprocess_many

log = logging.getLogger(__name__)

MIN_SLICE = 16  # images: below this a slice's round trip to a helper costs more than it saves
# The request thread also runs the models on every slice and writes the answers, so it takes a
# smaller share of the preprocessing than each helper (measured on 2 cores, 256 images, before
# the multipart reader: 0.5 of a helper's share gave 4,339 images/s, 0.85 to 1.0 4,772 to 5,179,
# 1.2 4,626).
OWN_SHARE = 0.9

Prepared = list[Preprocessed | ApiError]


def plan(n: int, helpers: int) -> list[int]:
    """Slice sizes for a batch of `n`: the request thread's first, then one per helper used."""
    used = min(helpers, n // MIN_SLICE - 1)
    if used < 1:
        return [n]
    own = max(MIN_SLICE, round(n * OWN_SHARE / (OWN_SHARE + used)))
    rest, extra = divmod(n - own, used)
    return [own] + [rest + (i < extra) for i in range(used)]


def _init_helper(worker: int) -> None:
    """In each helper: leave a Ctrl-C in the terminal, which reaches the whole process group,
    to the worker, which stops its helpers; and exit as soon as the worker is gone.

    The fork server cannot be relied on for the second: each process it starts keeps the
    write end of the pipe whose closing tells the fork server to exit, so a helper waiting for
    work keeps the fork server alive, and the fork server keeps the helper."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(os, "pidfd_open"):  # Linux 5.3+: elsewhere helpers go with their pipes
        return
    try:
        pidfd = os.pidfd_open(worker)
    except ProcessLookupError:
        os._exit(0)

    def exit_with_worker() -> None:
        select.select([pidfd], [], [])  # readable once the worker has exited
        os._exit(0)

    threading.Thread(target=exit_with_worker, name="exit-with-worker", daemon=True).start()


class BatchPool:
    def __init__(self, processes: int, spec: InputSpec, max_pixels: int):
        self.processes = processes
        self._args = (spec, max_pixels)
        self._executor: ProcessPoolExecutor | None = None  # set once every helper answers
        self._lock = threading.Lock()
        self._starting = False
        self._closed = False

    def start(self) -> None:
        """Starts the helpers in a background thread, unless they run or are starting;
        returns at once."""
        with self._lock:
            if self._starting or self._closed:
                return
            self._starting = True
        threading.Thread(target=self._start, name="batch-pool-start", daemon=True).start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["server.preprocess"])
        executor = ProcessPoolExecutor(
            self.processes, mp_context=ctx, initializer=_init_helper, initargs=(os.getpid(),)
        )
        try:
            # One task per helper, all at once, so every process exists before the first batch.
            warm = [
                executor.submit(preprocess_many, [], *self._args) for _ in range(self.processes)
            ]
            for f in warm:
                f.result(timeout=120)
        except Exception:
            log.exception("batch helpers failed to start; batches run in one process")
            executor.shutdown(wait=False, cancel_futures=True)
            return  # _starting stays set: no retry on every batch
        with self._lock:
            if self._closed:
                executor.shutdown(wait=False, cancel_futures=True)
                return
            self._executor = executor
        log.info("%d batch helper process(es) ready", self.processes)

    def slices(
        self, images: list[bytes], prepare: Callable[[list[bytes]], Prepared]
    ) -> Iterator[Prepared]:
        """The batch preprocessed, slice by slice in order: `prepare` (the request thread) does
        the first while the helpers do the rest."""
        executor = self._executor
        if executor is None and len(plan(len(images), self.processes)) > 1:
            self.start()  # this batch runs in the request thread; later ones get the helpers
        sizes = plan(len(images), self.processes if executor else 0)
        if len(sizes) == 1:
            yield prepare(images)
            return
        cuts = [0, *itertools.accumulate(sizes)]
        chunks = [images[a:b] for a, b in itertools.pairwise(cuts)]
        futures: list[Future | None] = []
        for chunk in chunks[1:]:
            try:
                futures.append(executor.submit(preprocess_many, chunk, *self._args))
            except (BrokenProcessPool, RuntimeError):  # broken, or shut down meanwhile
                self._rebuild(executor)
                futures.append(None)
        yield prepare(chunks[0])
        for chunk, future in zip(chunks[1:], futures, strict=True):
            prepared = None
            if future is not None:
                try:
                    prepared = future.result()
                except BrokenProcessPool:
                    self._rebuild(executor)
            yield prepare(chunk) if prepared is None else prepared

    def _rebuild(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is not broken or self._closed:
                return  # another request got here first
            self._executor = None
            self._starting = False
        log.error("a batch helper died; restarting the helpers")
        broken.shutdown(wait=False, cancel_futures=True)
        self.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            # The helpers exit when told to, or with the worker: nothing to wait for.
            executor.shutdown(wait=False, cancel_futures=True)
