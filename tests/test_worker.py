"""The wrapper that runs a method on a worker, called here directly (no engine)."""

from __future__ import annotations

from sample_methods import add, fail

from colmena_fed.worker import pack_method, read_report, run_packed


def test_a_packed_method_reports_its_value_timing_and_worker() -> None:
    wrapped = pack_method(add, "add")
    assert wrapped.__name__ == "add"  # type: ignore[attr-defined]
    report = read_report(wrapped("t1", 1, None, 2, y=3))
    assert report.success is True
    assert report.value == 5
    assert report.compute_started <= report.compute_ended
    assert report.pid > 0
    assert report.task_id == "t1"  # a resumed run matches what it finds by it


def test_an_exception_is_reported_not_raised() -> None:
    report = read_report(pack_method(fail, "fail")("t2", 1, None, "boom"))
    assert report.success is False
    assert (report.exception_type, report.message) == ("ValueError", "boom")
    assert report.traceback is not None
    assert "raise ValueError(message)" in report.traceback


def test_a_value_pickle_cannot_take_comes_back_for_dill() -> None:
    def make_closure() -> object:
        offset = 1
        return lambda x: x + offset

    raw = pack_method(make_closure, "make_closure")("t3", 1, None)
    assert isinstance(raw, tuple)  # left for Globus Compute's dill-based serializer
    report = read_report(raw)
    assert report.success is True
    assert report.value(1) == 2


def test_a_worker_unpickles_each_method_once() -> None:
    wrapped = pack_method(add, "add-once")
    key = wrapped.args[0]
    assert read_report(wrapped("t4", 1, None, 1)).value == 1
    # The same key with a broken pickle still runs: the method was kept from the first call.
    report = read_report(run_packed(key, b"not a pickle", None, None, None, "t5", 1, None, 4, y=1))
    assert report.value == 5
