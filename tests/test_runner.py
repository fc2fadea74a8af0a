"""nstlib.runner without widgets: RunController's thread, stop, refusal, errors; Throttle's clock."""

from __future__ import annotations

import threading
import time

import pytest

from nstlib.runner import RunController, Throttle

WAIT = 30  # s: every wait is bounded


@pytest.fixture
def gate():
    """An Event the work waits on; set at the end, so that no test leaves a thread running."""
    g = threading.Event()
    yield g
    g.set()


def blocking(gate: threading.Event):
    def work(stop: threading.Event) -> str:
        while not (stop.is_set() or gate.is_set()):
            time.sleep(0.005)
        return "stopped" if stop.is_set() else "released"
    return work


def test_start_runs_in_a_thread_and_returns_at_once(gate):
    ctl = RunController("test-run")
    done, names = [], []

    def work(stop):
        names.append(threading.current_thread().name)
        return blocking(gate)(stop)

    t = time.perf_counter()
    assert ctl.start(work, on_done=done.append)
    assert time.perf_counter() - t < 0.5
    assert ctl.running and done == []
    gate.set()
    assert ctl.wait(WAIT) and not ctl.running
    assert done == ["released"] and names == ["test-run"]
    assert RunController.started_any.is_set()


def test_a_second_start_is_refused_in_the_same_and_in_another_controller(gate):
    a, b = RunController(), RunController()
    assert a.start(blocking(gate))
    assert not a.start(blocking(gate))
    assert not b.start(blocking(gate))
    assert b.busy_elsewhere() and not a.busy_elsewhere()
    assert not b.running
    gate.set()
    assert a.wait(WAIT)
    assert not b.busy_elsewhere()
    assert b.start(lambda stop: None) and b.wait(WAIT), "after the run ended, another may start"


def test_a_non_exclusive_controller_leaves_the_slot_to_the_runs_it_starts(gate):
    seq, inner = RunController(exclusive=False), RunController()
    started = []
    assert seq.start(lambda stop: started.append(inner.start(blocking(gate))))
    assert seq.wait(WAIT) and started == [True]
    assert seq.busy_elsewhere()
    gate.set()
    assert inner.wait(WAIT)


def test_stop_sets_the_event_the_work_sees(gate):
    ctl = RunController()
    done = []
    assert ctl.start(blocking(gate), on_done=done.append)
    ctl.stop()
    assert ctl.wait(WAIT)
    assert done == ["stopped"]
    assert ctl.start(lambda stop: stop.is_set(), on_done=done.append) and ctl.wait(WAIT)
    assert done[-1] is False, "a Stop of the last run does not stop the next"


def test_an_exception_reaches_on_error_not_the_thread():
    ctl = RunController()
    errors, done, hooked = [], [], []

    def work(stop):
        raise ValueError("bad image")

    old_hook, threading.excepthook = threading.excepthook, hooked.append
    try:
        assert ctl.start(work, on_done=done.append, on_error=errors.append)
        assert ctl.wait(WAIT)
        # on_done failing goes to on_error too; on_error failing goes nowhere
        assert ctl.start(lambda stop: 1, on_done=lambda r: 1 / 0, on_error=errors.append) and ctl.wait(WAIT)
        assert ctl.start(work, on_error=lambda e: 1 / 0) and ctl.wait(WAIT)
    finally:
        threading.excepthook = old_hook
    assert hooked == [] and done == []
    assert [type(e) for e in errors] == [ValueError, ZeroDivisionError] and str(errors[0]) == "bad image"
    assert not ctl.running


def test_before_runs_before_the_thread_and_a_failing_before_starts_nothing(gate):
    ctl = RunController()
    order = []
    assert ctl.start(lambda stop: order.append("work"), before=lambda: order.append("before")) and ctl.wait(WAIT)
    assert order == ["before", "work"]
    with pytest.raises(RuntimeError):
        ctl.start(blocking(gate), before=lambda: (_ for _ in ()).throw(RuntimeError("no")))
    assert not ctl.running and not RunController().busy_elsewhere()


def test_wait_with_a_timeout(gate):
    ctl = RunController()
    assert ctl.wait(0.01), "nothing started: nothing to wait for"
    assert ctl.start(blocking(gate))
    t = time.perf_counter()
    assert not ctl.wait(0.05)
    assert time.perf_counter() - t < 5
    gate.set()
    assert ctl.wait(WAIT)


def test_throttle_with_given_times():
    t = Throttle(0.5)
    assert t.ready(10.0)
    assert not t.ready(10.2)
    assert not t.ready(10.49)
    assert t.ready(10.5)
    assert not t.ready(10.9)
    assert t.ready(11.0)
    t.reset()
    assert t.ready(11.1), "after reset the next call says yes"
    t.every_s = 0.0
    assert t.ready(11.1) and t.ready(11.1)
    once = Throttle(3600)
    assert once.ready() and not once.ready()  # the real clock
