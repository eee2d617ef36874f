"""A pool of helper processes that preprocess parts of a large batch, so that one request can
use every core.

A request runs on one core (the GIL), and most of a batch's time is preprocessing: numpy and
Pillow calls on small arrays that hold the GIL. The pool's helpers are started by a fork server
(so never forked from a process that already runs threads). A large batch is cut into chunks
that are all offered to the helpers at once; the request thread preprocesses the first chunk,
then, while the next one in order is not ready, takes back from the end a chunk no helper has
started and does it itself. The work is shared by what each side gets done, not by a fixed
split: on a machine whose other cores are busy the request thread does nearly everything and
never waits long for a helper (at most the chunks a helper has started), and on an idle one
the helpers do their share. Each chunk goes to the models as soon as it and those before it
are ready.

The pool starts its processes (fork server, resource tracker, helpers) in the background on
the first batch large enough to be cut, so a server that never gets one never runs them. Until
they are up, and after one has died (the pool is then rebuilt), batches are preprocessed in
the request thread alone: slower, never lost. A helper exits as soon as its worker is gone,
however the worker ends; then the fork server and the resource tracker, which exit once no
process holds their pipes, follow: nothing outlives the worker.
"""

from __future__ import annotations

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

# Images per chunk: below this a chunk's round trip to a helper costs more than it saves, and
# it bounds what the request thread may wait for when a helper is slow (the chunks a helper
# has started: one running, one queued per helper).
CHUNK = 16

Prepared = list[Preprocessed | ApiError]


def chunks_of(images: list[bytes]) -> list[list[bytes]]:
    return [images[i : i + CHUNK] for i in range(0, len(images), CHUNK)]


def share(
    chunks: list[list[bytes]],
    futures: list[Future | None],
    prepare: Callable[[list[bytes]], Prepared],
    lost: Callable[[], None] = lambda: None,
) -> Iterator[Prepared]:
    """Each chunk's preparation, in order. `futures[i]` is chunk i offered to the helpers
    (None: not offered); the request thread runs `prepare` on the first chunk and on every
    chunk it takes back. `lost` is called when a helper's pool turns out broken; its chunks are
    then prepared here."""
    results: dict[int, Prepared] = {}
    last = len(chunks) - 1  # every chunk after it is taken back or started by a helper
    for i in range(len(chunks)):
        while i not in results:
            future = futures[i]
            if future is None:  # never offered: the request thread's own
                results[i] = prepare(chunks[i])
            elif future.done():
                results[i] = _collected(future, chunks[i], prepare, lost)
            elif last > i and (futures[last] is None or futures[last].cancel()):
                # No helper has started chunk `last` (a cancelled future never runs): the
                # request thread does it rather than wait.
                results[last] = prepare(chunks[last])
                last -= 1
            elif future.cancel():
                results[i] = prepare(chunks[i])
            else:  # the helpers started every chunk left (they take them in order): wait
                results[i] = _collected(future, chunks[i], prepare, lost)
        yield results.pop(i)


def _collected(future: Future, chunk: list[bytes], prepare, lost) -> Prepared:
    try:
        return future.result()
    except BrokenProcessPool:
        lost()
        return prepare(chunk)


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
        """The batch preprocessed, part by part in order, shared between the request thread
        (`prepare`) and the helpers as `share` says."""
        executor = self._executor
        chunks = chunks_of(images)
        if len(chunks) > 1 and executor is None:
            self.start()  # this batch runs in the request thread; later ones get the helpers
        if len(chunks) == 1 or executor is None:
            yield prepare(images)
            return
        futures: list[Future | None] = [None]
        for chunk in chunks[1:]:
            try:
                futures.append(executor.submit(preprocess_many, chunk, *self._args))
            except (BrokenProcessPool, RuntimeError):  # broken, or shut down meanwhile
                self._rebuild(executor)
                futures += [None] * (len(chunks) - len(futures))
                break
        yield from share(chunks, futures, prepare, lambda: self._rebuild(executor))

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
