"""How server/batch_pool.py shares a batch between the request thread and the helpers."""

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from server.batch_pool import CHUNK, chunks_of, share


def _run(images, helper_work, prepare):
    """share() over a one-thread executor standing in for one helper; the answers flattened."""
    chunks = chunks_of(images)
    with ThreadPoolExecutor(1) as helper:
        futures = [None] + [helper.submit(helper_work, c) for c in chunks[1:]]
        return [x for part in share(chunks, futures, prepare) for x in part]


def test_chunks_cover_the_batch_in_order():
    images = list(range(5 * CHUNK + 3))
    chunks = chunks_of(images)
    assert [x for c in chunks for x in c] == images
    assert all(len(c) == CHUNK for c in chunks[:-1]) and len(chunks[-1]) == 3


def test_a_held_up_helper_leaves_every_chunk_it_has_not_started_to_the_request_thread():
    images = list(range(6 * CHUNK + 4))  # 7 chunks: the thread's, then 6 offered to the helper
    gate = threading.Event()
    prepared = []

    def helper_work(chunk):
        gate.wait(30)  # a helper that gets no CPU until the request thread has done the rest
        return [("helper", x) for x in chunk]

    def prepare(chunk):
        prepared.append(chunk[0] // CHUNK)
        if len(prepared) == 6:
            gate.set()
        return [("thread", x) for x in chunk]

    answers = _run(images, helper_work, prepare)
    assert [x for _, x in answers] == images
    # The first chunk, then from the end every chunk the helper had not started; the helper
    # holds only the one it started (the batch waited for nothing else).
    assert prepared == [0, 6, 5, 4, 3, 2]
    assert {who for who, x in answers if x // CHUNK == 1} == {"helper"}


def test_a_free_helper_does_its_share_and_no_chunk_is_done_twice():
    images = list(range(8 * CHUNK))
    done_two = threading.Event()
    by_helper = []

    def helper_work(chunk):
        by_helper.append(chunk[0] // CHUNK)
        if len(by_helper) == 2:
            done_two.set()
        return [("helper", x) for x in chunk]

    by_thread = []

    def prepare(chunk):
        if not by_thread:
            done_two.wait(30)  # the request thread is slow with its first chunk
        by_thread.append(chunk[0] // CHUNK)
        return [("thread", x) for x in chunk]

    answers = _run(images, helper_work, prepare)
    assert [x for _, x in answers] == images
    assert {1, 2} <= set(by_helper) and by_thread[0] == 0
    assert sorted(by_helper + by_thread) == list(range(8))


def test_a_broken_pool_leaves_its_chunks_to_the_request_thread():
    chunks = chunks_of(list(range(3 * CHUNK)))
    broken = Future()
    broken.set_exception(BrokenProcessPool("a helper died"))
    lost = []
    answers = share(chunks, [None, broken, broken], lambda c: list(c), lambda: lost.append(1))
    assert [x for part in answers for x in part] == list(range(3 * CHUNK))
    assert lost
