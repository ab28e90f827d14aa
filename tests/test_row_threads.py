import threading

import pytest
import torch

from idspn.row_threads import row_spans, run_spans


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_spans_cover_every_row_once_one_span_per_thread(threads):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        spans = row_spans(1001, 10**7)
    finally:
        torch.set_num_threads(before)
    assert len(spans) == threads
    covered = [i for s in spans for i in range(1001)[s]]
    assert covered == list(range(1001))


def test_small_work_and_few_rows_are_not_split():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert row_spans(1000, 100) == [slice(0, 1000)]  # too little work per thread
        assert len(row_spans(2, 10**7)) == 2  # never more spans than rows
    finally:
        torch.set_num_threads(before)


def test_run_spans_runs_each_span_once_on_pool_threads():
    seen: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def work(span: slice) -> None:
        with lock:
            seen.append((span.start, span.stop, threading.current_thread().name))

    spans = [slice(0, 3), slice(3, 7), slice(7, 9)]
    run_spans(work, spans)
    assert sorted((a, b) for a, b, _ in seen) == [(0, 3), (3, 7), (7, 9)]
    assert all(name.startswith("idspn-rows") for _, _, name in seen)
    seen.clear()
    run_spans(work, [slice(0, 9)])  # a single span runs in the caller's thread
    assert seen == [(0, 9, threading.current_thread().name)]


@pytest.mark.parametrize("inference", [False, True])
def test_one_torch_thread_per_span_in_the_callers_modes(inference, monkeypatch):
    import time

    from idspn import row_threads

    monkeypatch.setattr(row_threads, "_POOL", None)  # new pool threads: each must get one torch thread
    monkeypatch.setattr(row_threads, "_POOL_SIZE", 0)
    seen: list[tuple[int, bool, bool]] = []
    lock = threading.Lock()

    def work(span: slice) -> None:
        if span.start == 0:
            time.sleep(0.2)  # the other span's thread finishes first
        with lock:
            seen.append((torch.get_num_threads(), torch.is_grad_enabled(), torch.is_inference_mode_enabled()))

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.inference_mode(inference), torch.no_grad():
            row_threads.run_spans(work, [slice(0, 2), slice(2, 4)])
        threads_after = torch.get_num_threads()
        fresh: list[int] = []
        thread = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
        thread.start()
        thread.join()
    finally:
        torch.set_num_threads(before)
    assert seen == [(1, False, inference)] * 2
    assert threads_after == 2 and fresh == [2]  # the caller's count and new threads' default kept


def test_pool_threads_run_nested_spans_themselves():
    # A pool thread never waits on its own pool (which could be busy with its siblings).
    names: dict[int, tuple[str, list[str]]] = {}

    def inner(outer: int, record: list[str]) -> None:
        def work(span: slice) -> None:
            record.append(threading.current_thread().name)

        run_spans(work, [slice(0, 1), slice(1, 2), slice(2, 3)])

    def outer(span: slice) -> None:
        record: list[str] = []
        inner(span.start, record)
        names[span.start] = (threading.current_thread().name, record)

    run_spans(outer, [slice(0, 1), slice(1, 2)])
    assert len(names) == 2
    for name, record in names.values():
        assert name.startswith("idspn-rows") and record == [name] * 3
