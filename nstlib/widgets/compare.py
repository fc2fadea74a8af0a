"""Compare mode: two tuning panels, A and B, their previews side by side, run one after the other."""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as W

from nstlib.runner import RunController
from nstlib.widgets.common import _descendants, _small
from nstlib.widgets.tuning import TuningPanel


class ComparePanel:
    """Two TuningPanels, A and B: their controls in tabs, their previews side by side, run one after the other."""

    def __init__(self, **kwargs: Any) -> None:
        self.a = TuningPanel(**kwargs)
        self.b = TuningPanel(**kwargs)
        self._runner = RunController("nstlib-compare", exclusive=False)
        self.run_button = W.Button(description="Run A, then B", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop")
        self.copy_button = W.Button(description="Copy A → B", icon="copy")
        self.diff = W.HTML()
        tabs = W.Tab(children=[self.a.controls, self.b.controls], titles=("A", "B"))
        self.widget = W.VBox([tabs, W.HBox([self.run_button, self.stop_button, self.copy_button]), self.diff,
                              W.HBox([W.VBox([W.HTML("<b>A</b>"), self.a.view]), W.VBox([W.HTML("<b>B</b>"), self.b.view])])])
        self.widget.add_class("nst-compare")
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.copy_button.on_click(lambda _: self._copy())
        for w in _descendants(self.a.controls) + _descendants(self.b.controls):
            if w.has_trait("value") and not isinstance(w, W.FileUpload):
                w.observe(lambda _: self._show_diff(), "value")
        self._show_diff()

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    def differences(self) -> list[str]:
        """One line per setting where B differs from A, e.g. "size: 128 -> 256"."""
        sa, sb = self.a.settings(), self.b.settings()
        return [f"{k}: {sa[k]} -> {sb[k]}" for k in sa if sa[k] != sb[k]]

    def _show_diff(self) -> None:
        lines = self.differences()
        text = "; ".join(lines) if lines else "A and B have the same settings: change one thing in tab B."
        self.diff.value = _small(f"B differs from A in: {html.escape(text)}" if lines else text)

    def _copy(self) -> None:
        self.b.from_settings(self.a.settings())
        self._show_diff()

    @property
    def running(self) -> bool:
        return self._runner.running

    def run(self) -> bool:
        """Run A, then B, in a background thread; False if a run is going."""
        # The sequence does not take the process's run slot (A's and B's runs do), so it asks.
        if self._runner.running or self._runner.busy_elsewhere():
            self.a._note("Run ignored: a run is already going. Press its Stop first, or wait for it to end.", error=True)
            return False
        self._show_diff()
        return self._runner.start(self._work)

    def _work(self, stop: threading.Event) -> None:
        for p in (self.a, self.b):
            if stop.is_set() or not p.run():
                return
            p.wait()

    def stop(self) -> None:
        self._runner.stop()
        self.a.stop()
        self.b.stop()

    def wait(self, timeout: float | None = None) -> bool:
        return self._runner.wait(timeout)
