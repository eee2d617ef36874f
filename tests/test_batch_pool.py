"""How server/batch_pool.py shares a batch between the request thread and the helpers."""

import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from server.batch_pool import CHUNK, HELPER_CHUNKS, Shared, chunks_of


def _run(images, helper_work, prepare, lost=lambda: None):
    """A batch shared with one helper, a thread standing in for its process: the answers put
    back in the batch's order, as the predictor does."""
    answers = [None] * len(images)
    with ThreadPoolExecutor(1) as helper:
        shared = Shared(chunks_of(images), helper, helper_work, 1, lost)
        for start, part in shared.prepared(prepare):
            assert answers[start : start + len(part)] == [None] * len(part)  # once each
            answers[start : start + len(part)] = part
    return answers


def _by(who):
    return lambda chunk: [(who, x) for x in chunk]


def test_chunks_cover_the_batch_in_order():
    images = list(range(5 * CHUNK + 3))
    chunks = chunks_of(images)
    assert [x for c in chunks for x in c] == images
    assert all(len(c) == CHUNK for c in chunks[:-1]) and len(chunks[-1]) == 3


def test_a_held_up_helper_leaves_all_but_its_task_to_the_request_thread():
    images = list(range(6 * CHUNK + 4))  # 7 chunks
    gate = threading.Event()
    prepared = []

    def helper_work(chunk):
        gate.wait(30)  # a helper that gets no CPU until the request thread has done the rest
        return _by("helper")(chunk)

    def prepare(chunk):
        prepared.append(chunk[0] // CHUNK)
        if len(prepared) == 7 - HELPER_CHUNKS:
            gate.set()
        return _by("thread")(chunk)

    answers = _run(images, helper_work, prepare)
    assert [x for _, x in answers] == images
    # The first chunk, then from the end every chunk the helper had not taken; the batch waits
    # only for the helper's one task.
    assert prepared == [0, 6, 5, 4, 3]
    assert {who for who, x in answers if x // CHUNK in (1, 2)} == {"helper"}


def test_a_free_helper_is_handed_task_after_task_and_no_chunk_is_done_twice():
    images = list(range(10 * CHUNK))
    two_tasks = threading.Event()
    by_helper = []

    def helper_work(chunk):
        by_helper.extend(sorted({x // CHUNK for x in chunk}))
        if len(by_helper) == 2 * HELPER_CHUNKS:
            two_tasks.set()
        return _by("helper")(chunk)

    by_thread = []

    def prepare(chunk):
        if not by_thread:
            two_tasks.wait(30)  # the request thread is slow with its first chunk
        by_thread.append(chunk[0] // CHUNK)
        return _by("thread")(chunk)

    answers = _run(images, helper_work, prepare)
    assert [x for _, x in answers] == images
    assert by_helper[: 2 * HELPER_CHUNKS] == list(range(1, 1 + 2 * HELPER_CHUNKS))
    assert by_thread[0] == 0 and sorted(by_helper + by_thread) == list(range(10))


def test_a_broken_pool_leaves_its_chunks_to_the_request_thread_and_is_rebuilt():
    def broken(chunk):
        raise BrokenProcessPool("a helper died")

    lost = []
    answers = _run(list(range(5 * CHUNK)), broken, _by("thread"), lambda: lost.append(1))
    assert answers == _by("thread")(range(5 * CHUNK)) and lost


def test_a_fault_in_the_helpers_work_is_redone_by_the_request_thread():
    # A bug raises again in the request thread, which answers with an error, never hangs; the
    # pool itself is fine and is kept.
    def faulty(chunk):
        raise ValueError("a bug")

    lost = []
    answers = _run(list(range(5 * CHUNK)), faulty, _by("thread"), lambda: lost.append(1))
    assert answers == _by("thread")(range(5 * CHUNK)) and not lost


def test_what_the_helper_has_done_goes_to_the_models_before_the_thread_prepares_more():
    """The models read each chunk as soon as it is ready, whatever its place: the request
    thread hands out the helper's chunks before it prepares one more of its own, so that the
    models' share of the batch runs while the helper works, not after it."""
    images = list(range(8 * CHUNK))
    second_task = threading.Event()
    order = []

    def helper_work(chunk):
        if chunk[0] // CHUNK > HELPER_CHUNKS:
            second_task.wait(30)  # the helper's next task is not done before the test says
        return _by("helper")(chunk)

    with ThreadPoolExecutor(1) as helper:
        shared = Shared(chunks_of(images), helper, helper_work, 1)

        def prepare(chunk):
            i = chunk[0] // CHUNK
            order.append(("prepared", i))
            if i == 0:  # the helper's first task is back before the thread's first chunk
                while len(shared.results) < HELPER_CHUNKS:
                    threading.Event().wait(0.01)
            if i == 5:
                second_task.set()
            return _by("thread")(chunk)

        for start, _ in shared.prepared(prepare):
            order.append(("read", start // CHUNK))
    assert order[:2] == [("prepared", 0), ("read", 0)]
    assert set(order[2:4]) == {("read", 1), ("read", 2)}
    # In order, chunk 7 would wait for 3 to 6: here it is read as soon as it is prepared.
    assert order[4:6] == [("prepared", 7), ("read", 7)]
    assert sorted(i for what, i in order if what == "read") == list(range(8))
