"""A pool of helper processes that preprocess parts of a large batch, so that one request can
use every core.

A request runs on one core (the GIL), and most of a batch's time is preprocessing: numpy and
Pillow calls on small arrays that hold the GIL. The pool's helpers are started by a fork server
(so never forked from a process that already runs threads). A large batch is cut into chunks
that the request thread and the helpers take until none is left (`Shared`): each helper one
task at a time from the front, handed the next as soon as it answers; the request thread the
first chunk, then from the back. The work is shared by what each side gets done, not by a
fixed split: on a machine whose other cores are busy the request thread does nearly all of it
and waits at most for one task per helper; on an idle one the helpers do their share. Each
chunk goes to the models as soon as it is ready, in whatever order: the request thread runs
the models on what the helpers hand back before it prepares more itself, so that the models'
share of the batch overlaps the helpers' work instead of following it.

The pool starts its processes (fork server, resource tracker, helpers) in the background on
the first batch large enough to be cut, so a server that never gets one never runs them. Until
they are up, and after one has died (the pool is then rebuilt), batches are preprocessed in
the request thread alone: slower, never lost. A helper exits as soon as its worker is gone,
however the worker ends; then the fork server and the resource tracker, which exit once no
process holds their pipes, follow: nothing outlives the worker.
"""

from __future__ import annotations

import functools
import itertools
import logging
import multiprocessing
import os
import select
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from server.errors import ApiError
from server.manifest import InputSpec
from server.preprocess import Preprocessed, preprocess_many

log = logging.getLogger(__name__)

# Images per chunk: the request thread's unit of work. A helper's task is HELPER_CHUNKS chunks:
# each task costs about a millisecond of CPU on each side (pickling, the executor's threads;
# measured on 16- and 32-image tasks), and a task is what the request thread may have to wait
# for when a helper gets no CPU.
CHUNK = 16
HELPER_CHUNKS = 2
SHARED_FROM = 2 * CHUNK  # images: a smaller batch is one chunk and a scrap, done in one go

Prepared = list[Preprocessed | ApiError]


def chunks_of(images: list[bytes]) -> list[list[bytes]]:
    return [images[i : i + CHUNK] for i in range(0, len(images), CHUNK)]


class Shared:
    """One batch's chunks, shared as the module docstring says. `work(images)` runs on the
    helpers through `executor`; `lost()` is called when the helpers' pool turns out broken,
    and every chunk it held comes back to the request thread."""

    def __init__(
        self,
        chunks: list[list[bytes]],
        executor: Executor,
        work: Callable[[list[bytes]], Prepared],
        helpers: int,
        lost: Callable[[], None] = lambda: None,
    ):
        self.chunks = chunks
        self.executor = executor
        self.work = work
        self.lost = lost
        self.todo = deque(range(1, len(chunks)))  # taken by nobody yet; chunk 0 is the thread's
        # The batch index of each chunk's first image.
        self.starts = [0, *itertools.accumulate(len(c) for c in chunks[:-1])]
        self.results: dict[int, Prepared] = {}
        self.cond = threading.Condition()
        self.broken = False
        for _ in range(helpers):
            self._offer()

    def _offer(self) -> None:
        """A helper's next task, from the front of what is left."""
        with self.cond:
            if self.broken or not self.todo:
                return
            taken = [self.todo.popleft() for _ in range(min(HELPER_CHUNKS, len(self.todo)))]
        try:
            future = self.executor.submit(self.work, [im for i in taken for im in self.chunks[i]])
        except (BrokenProcessPool, RuntimeError):  # broken, or shut down meanwhile
            self._give_back(taken, lost=True)
            return
        future.add_done_callback(lambda f: self._done(taken, f))

    def _done(self, taken: list[int], future: Future) -> None:
        """A helper's answer (on the executor's thread): stored, and the helper's next task."""
        try:
            prepared = future.result()
        except BaseException as e:
            # Whatever it is, the request thread redoes the chunks: a broken pool is rebuilt;
            # a fault in the work itself, raised again there, answers the request with an
            # error instead of leaving it waiting.
            self._give_back(taken, lost=isinstance(e, BrokenProcessPool))
            return
        with self.cond:
            start = 0
            for i in taken:
                self.results[i] = prepared[start : start + len(self.chunks[i])]
                start += len(self.chunks[i])
            self.cond.notify_all()
        self._offer()

    def _give_back(self, taken: list[int], lost: bool) -> None:
        """The chunks of a task that did not answer, back to the request thread; no more tasks
        for this batch."""
        with self.cond:
            self.broken = True
            self.todo.extendleft(reversed(taken))
            self.cond.notify_all()
        if lost:
            self.lost()

    def prepared(
        self, prepare: Callable[[list[bytes]], Prepared]
    ) -> Iterator[tuple[int, Prepared]]:
        """Each chunk's preparation with the batch index of its first image, as soon as it is
        ready, in no set order. The request thread runs `prepare` on the first chunk; after
        that it hands out each chunk a helper has done as it comes, so the models read it
        while the helpers go on, and runs `prepare` on a chunk from the back only while none
        is waiting."""
        left = len(self.chunks)
        own: int | None = 0  # the request thread's chunk to prepare next
        while left:
            ready = None
            with self.cond:
                while own is None and not self.results and not self.todo:
                    self.cond.wait()  # every chunk left is with a helper
                if own is None and self.results:
                    ready = self.results.popitem()
                elif own is None:
                    own = self.todo.pop()
            if ready is None:
                ready, own = (own, prepare(self.chunks[own])), None
            left -= 1
            yield self.starts[ready[0]], ready[1]


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
    ) -> Iterator[tuple[int, Prepared]]:
        """The batch preprocessed, part by part as each is ready, with the batch index of
        each part's first image, shared between the request thread (`prepare`) and the
        helpers (`Shared`)."""
        executor = self._executor
        if len(images) >= SHARED_FROM and executor is None:
            self.start()  # this batch runs in the request thread; later ones get the helpers
        if len(images) < SHARED_FROM or executor is None:
            yield 0, prepare(images)
            return
        chunks = chunks_of(images)
        work = functools.partial(preprocess_many, spec=self._args[0], max_pixels=self._args[1])
        shared = Shared(chunks, executor, work, self.processes, lambda: self._rebuild(executor))
        yield from shared.prepared(prepare)

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
