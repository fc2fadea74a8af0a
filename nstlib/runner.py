"""Background runs for the interactive panels: one at a time per process, stoppable, throttled.

    ctl = RunController()
    ctl.start(lambda stop: long_job(stop), on_done=show, on_error=report)   # returns at once
    ctl.stop(); ctl.wait(10)

`RunController` owns one background thread and the stop Event its work polls. Every
exclusive controller of the process shares one slot: while one's run goes, any other
`start` is refused, because two runs would share the processor (or the GPU's memory) and
each be slower than both one after the other. `Throttle` says when enough time has passed
to send the browser another preview or plot.

Nothing here imports ipywidgets or torch: both classes are tested with plain functions.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, ClassVar

Work = Callable[[threading.Event], Any]


class RunController:
    """One background run at a time: start, stop, wait.

    exclusive=True (the default): the run takes the process's one run slot, so that no other
    exclusive controller starts while it goes. exclusive=False: a controller that only
    sequences other controllers' runs (ComparePanel's "A, then B"); it refuses a second start
    of its own but leaves the slot to the runs it starts.
    """

    # Class-level, not per instance: the limit is one run per process, whichever panel runs it.
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _active: ClassVar["RunController | None"] = None  # the exclusive controller that ran last
    started_any: ClassVar[threading.Event] = threading.Event()
    """Set once any exclusive run has started: the warm-up skips its work then (it would only compete)."""

    def __init__(self, name: str = "nstlib-run", *, exclusive: bool = True) -> None:
        self.name = name
        self.exclusive = exclusive
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def running(self) -> bool:
        """True while this controller's thread is alive (its callbacks included)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def busy_elsewhere(self) -> bool:
        """True if another exclusive controller's run is going (read under the lock)."""
        with RunController._lock:
            return self._other_running()

    def _other_running(self) -> bool:
        active = RunController._active
        return active is not None and active is not self and active.running

    def start(self, work: Work, on_done: Callable[[Any], Any] | None = None,
              on_error: Callable[[Exception], Any] | None = None, *,
              before: Callable[[], Any] | None = None) -> bool:
        """Run `work(stop_event)` in a new daemon thread; False (and no thread) if a run is going.

        Refused while this controller runs, or, if exclusive, while any other exclusive one does.
        on_done(result) runs in the thread after `work` returns; an exception from `work` or
        on_done goes to on_error(exception) and is never raised in the thread. `before()` runs
        under the lock once the start is accepted, just before the thread starts: the caller
        resets its state there, so that the thread never sees (or overwrites) the old state.
        If `before` raises, nothing is started and the exception reaches the caller.
        """
        with RunController._lock:
            if self.running or (self.exclusive and self._other_running()):
                return False
            if before is not None:
                before()
            if self.exclusive:
                RunController._active = self
                RunController.started_any.set()
            # A fresh Event per run: a Stop pressed after the last run ended must not stop the next.
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(work, self._stop, on_done, on_error),
                                            daemon=True, name=self.name)
            self._thread.start()
            return True

    @staticmethod
    def _run(work: Work, stop: threading.Event, on_done: Callable[[Any], Any] | None,
             on_error: Callable[[Exception], Any] | None) -> None:
        try:
            result = work(stop)
            if on_done is not None:
                on_done(result)
        except Exception as e:
            if on_error is not None:
                try:
                    on_error(e)
                except Exception:  # nowhere left to report it; a traceback in a thread helps nobody
                    pass

    def stop(self) -> None:
        """Ask the current run to end: sets the Event its work polls (the work decides when)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end (at most `timeout` s). True if no run is going any more."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running


class Throttle:
    """Says whether `every_s` seconds have passed since it last said yes (the first call: yes).

    every_s may be changed between calls; every_s=0 always says yes.
    """

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: float | None = None

    def ready(self, now: float | None = None) -> bool:
        """True (and the clock restarts) if `every_s` has passed; `now` defaults to time.perf_counter()."""
        now = time.perf_counter() if now is None else now
        if self._last is None or now - self._last >= self.every_s:
            self._last = now
            return True
        return False

    def reset(self) -> None:
        """Forget the last yes: the next `ready` says yes."""
        self._last = None
