"""Interactive tuning: a panel of ipywidgets that runs `stylize` with a live preview.

    panel = TuningPanel(content="tubingen", style="starry_night")
    panel            # the last value of a cell: shows the panel; press Run, Stop, Save

The run goes in a background thread, so the kernel keeps answering the panel while the
network works: Stop is seen at once, and a second Run is refused while one is going. The
thread updates the preview image and the loss plot at most every `preview_every_s` /
`plot_every_s` seconds (ipywidgets sends trait changes from any thread over the comm). The
thread, the stop and the one-run-per-kernel rule are `nstlib.runner.RunController`'s; the
settings, their JSON and the run they make are `nstlib.panel_settings.PanelSettings`'s; the
widgets and their layout are `nstlib.widgets.tuning_controls.TuningControls`'.
Everything a student can get wrong (no image, a file that is not an image, a size too small
for the chosen layers, weights that cannot be loaded) ends as a message in the panel.

Save writes the best image as PNG and a JSON beside it with the panel's settings, which
`TuningPanel.from_settings(path)` turns back into the same run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any, Mapping

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nstlib import data, paper_scale
from nstlib._io import atomic_group, atomic_write, ensure_folder
from nstlib.devices import pick_device
from nstlib.panel_settings import CPU_SIZE, GPU_SIZE, PAPER_STEPS, PanelSettings
from nstlib.runner import RunController, Throttle
from nstlib.settings import FAST_STEPS
from nstlib.stylize import StepInfo, StyleResult, stylize
from nstlib.weights import ENV_VAR
from nstlib.widgets.common import _extractor, _png, _start_warm_up
from nstlib.widgets.tuning_controls import TuningControls


class TuningPanel(TuningControls):
    """A tuning panel: controls, Run / Stop / Save, a live preview and a loss plot.

    For tests and notebooks: run(), stop(), wait(timeout), save(path), settings(),
    from_settings(dict or JSON path); attributes preview_updates, first_preview_s (seconds from
    run() to the first preview), result (the last StyleResult), error, message (the status line),
    notice (the last note or refusal), refused (Runs refused while running).
    """

    def __init__(self, content: str = "tubingen", style: str = "starry_night", *, preset: str = "fast",
                 size: int | None = None, steps: int | None = None, weights: str | None = None, device: str | None = None,
                 save_dir: str | os.PathLike = "out/tuning", preview_every_s: float = 0.2,
                 plot_every_s: float = 0.5) -> None:
        dev = pick_device(device)
        gpu = dev.type != "cpu"
        weights = weights or os.environ.get(ENV_VAR, "").strip() or "torchvision"
        _start_warm_up(weights, "avg", dev.type)  # while the panel is built and shown
        if preset not in ("fast", "paper"):
            raise ValueError(f"preset must be 'fast' or 'paper', got {preset!r}.")
        paper_steps = PAPER_STEPS["gpu" if gpu else "cpu"]
        super().__init__(content, style, preset=preset, size=size or (GPU_SIZE if gpu else CPU_SIZE),
                         steps=steps or (FAST_STEPS[0] if preset == "fast" else paper_steps), paper_steps=paper_steps,
                         device=dev.type, weights=weights, save_dir=str(save_dir))
        self.preview_every_s, self.plot_every_s = preview_every_s, plot_every_s
        # One run at a time per process (shared by every panel); previews and plots throttled.
        self._runner = RunController("nstlib-tuning")
        self._preview_throttle, self._plot_throttle = Throttle(preview_every_s), Throttle(plot_every_s)
        self.result: StyleResult | None = None
        self.error: BaseException | None = None
        self.preview_updates = self.plot_updates = self.refused = 0
        self.first_preview_s: float | None = None
        self._run_settings: dict[str, Any] = {}
        self._run_panel_settings = PanelSettings()
        self._run_uploads: dict[str, tuple[str, bytes]] = {}
        self._losses: list[tuple[int, float]] = []
        self._fig = Figure(figsize=(3.6, 2.0), dpi=80, layout="constrained")
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.save_button.on_click(lambda _: self._save_clicked())
        self._set_message("Ready: press Run.")
        self._cpu_note = "" if gpu else (
            f"No GPU here: the size starts at {self.size.value} px, where a step (and a new preview) takes a "
            f"fraction of a second with the fast preset; every doubling of the size makes each step about 4x slower.")
        self._net_for_ui()

    # -- settings ---------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """Every control's value, JSON-ready; `from_settings` takes it back."""
        return self._read().to_dict()

    def from_settings(self, settings: Mapping[str, Any] | str | os.PathLike) -> "TuningPanel":
        """Set every control from `settings()`'s dict or a JSON written by `save` (its path, .json or .png).

        A saved run that was stopped early is reproduced with the steps it did (steps_done).
        """
        meta: Mapping[str, Any] = {}
        if isinstance(settings, (str, os.PathLike)):
            path = Path(settings).with_suffix(".json")
            try:
                meta = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{path} is not a settings file written by TuningPanel.save or StyleResult.save "
                                 f"(it is not valid JSON: {e}).") from None
            settings = meta
        if not isinstance(settings, Mapping):
            raise ValueError(f"settings must be a dict (TuningPanel.settings()) or the JSON that Save writes, got "
                             f"{type(settings).__name__}.")
        if "panel" in settings:
            meta, settings = settings, settings["panel"]
        s = dict(settings)
        PanelSettings.from_dict(s)  # unknown keys: a ValueError naming them, before any control changes
        if meta.get("stopped") and isinstance(meta.get("steps_done"), int):
            if PanelSettings.from_dict(s).schedule()[0] is None:
                s["steps"] = meta["steps_done"]
            else:  # the slider sets the first scale's steps only: a stop in a finer scale has no setting
                self._note(f"That run was stopped after {meta['steps_done']} steps of several scales; these "
                           f"settings run it to the end.")
        if "device" in s and s["device"] not in self.device.options:
            self._note(f"device {s['device']!r} is not available here; using {self.device.value}.", error=True)
            s.pop("device")
        if "weights" in s and s["weights"] != self.weights:
            self.weights = s.pop("weights")
            self._net_for_ui()  # another network may have other layer names (VGG-16 or VGG-19)
        self._apply(s)
        return self

    # -- running ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._runner.running

    def run(self) -> bool:
        """Start a run in a background thread; False (and a note in the panel) if a run is going.

        One run at a time per process, in any panel: two would share the processor (or the GPU's
        memory) and each be slower than both one after the other.
        """
        if self._runner.start(self._work, on_done=self._ended, on_error=self._failed, before=self._reset_for_run):
            return True
        self.refused += 1
        where = "" if self.running else " in another panel"
        self._note(f"Run ignored: a run is already going{where}. Press its Stop first, or wait for it to end.",
                   error=True)
        return False

    def _reset_for_run(self) -> None:
        """The state of a new run, set before its thread starts (under the runner's lock)."""
        self._t0 = time.perf_counter()
        self.result, self.error, self.first_preview_s = None, None, None
        self.preview_updates = self.plot_updates = 0
        self._losses = []
        # The intervals are read at each run: a notebook may change preview_every_s between runs.
        self._preview_throttle.every_s, self._plot_throttle.every_s = self.preview_every_s, self.plot_every_s
        self._preview_throttle.reset()
        self._plot_throttle.reset()
        self._run_panel_settings = self._read()
        self._run_settings = self._run_panel_settings.to_dict()
        self._run_uploads = {k: up for k, c in (("content", self.content), ("style", self.style))
                             if (up := c.upload_bytes()) is not None}
        self._note("")
        self._set_message("Starting…")
        self.run_button.disabled, self.stop_button.disabled = True, False

    def stop(self) -> None:
        """Ask the run to end after the current step; the best image so far is kept."""
        if self.running:
            self._runner.stop()
            self._set_message("Stopping…")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end (at most `timeout` s). True if no run is going any more."""
        return self._runner.wait(timeout)

    def _work(self, stop: threading.Event) -> StyleResult:
        """The run, in the runner's thread; an exception ends in `_failed` (a message in the panel)."""
        s = self._run_panel_settings
        net = _extractor(s.weights, s.pooling, s.device)
        self._show_info(net, s.device)
        self._set_message("Loading the images…")
        content, c_note = self.content.load(s.size)
        style, s_note = self.style.load(s.size)
        for thumb, img in zip(self.thumbs.children, (content, style)):
            thumb.value = _png(img)
        self.thumbs.layout.display = None
        notes = [n for n in (c_note, s_note) if n.startswith("Could not")]
        if notes:
            self._note(" ".join(notes))
        # The α/β control is on the paper's scale: calibrated to this network (notebook 4's r*).
        scale = paper_scale.scale(net, tuple(s.style_weights)) if s.variant == "gatys" else 1.0
        run = s.run_settings(scale)  # ValueError if every style layer is off with the normalized loss
        styles: Any = style
        if s.style2:  # two paintings: the second's share of the Gram targets is the slider's
            second, note = data.load_or_fallback(s.style2, size=s.size)
            styles = [style, second]
            if s.blend in (0.0, 1.0):
                self._note(f"The share of the 2nd style is {s.blend:g}: only one painting counts.")
        self.progress.max, self.progress.value = _total(run.steps), 0
        self._set_message("Computing the targets…")
        self.result = stylize(content, styles, settings=run, extractor=net, callback=self._on_step, callback_every=1,
                              stop=stop, progress=False)
        self._finish(self.result)
        return self.result

    def _ended(self, _result: StyleResult) -> None:
        self.run_button.disabled, self.stop_button.disabled = False, True

    def _failed(self, e: Exception) -> None:
        # A message in the panel, never a traceback in the notebook.
        self.error = e
        self._set_message(f"Cannot run: {e}", error=True)
        self.run_button.disabled, self.stop_button.disabled = False, True

    def _on_step(self, info: StepInfo) -> None:
        self._losses.append((info.step, info.loss))
        if self._preview_throttle.ready():
            self._show(info.image)
            self.progress.value = info.step
            self._set_message(f"step {info.step}/{info.steps}  loss {info.loss:.4g}  {info.elapsed:.1f} s")
        if self._plot_throttle.ready():
            self._draw_plot()

    def _show(self, image: torch.Tensor) -> None:
        self.preview.value = _png(image)
        self.preview_updates += 1
        if self.first_preview_s is None:
            self.first_preview_s = time.perf_counter() - self._t0

    def _finish(self, r: StyleResult) -> None:
        self._show(r.image)
        self._draw_plot()
        self.progress.value = r.steps_done
        how = f"Stopped ({r.stopped})" if r.stopped else "Done"
        self._set_message(f"{how}: {r.steps_done} of {_total(r.settings['steps'])} steps in {r.wall_time:.1f} s; "
                          f"showing the best image (loss {float(r.loss[0]):.4g}). Save keeps it.")

    def _draw_plot(self) -> None:
        if not self._losses:
            return
        fig = self._fig
        fig.clear()
        ax = fig.add_subplot()
        steps, losses = zip(*self._losses)
        ax.plot(steps, losses, lw=1.2)
        if min(losses) > 0:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("total loss", fontsize=8)
        ax.tick_params(labelsize=7)
        buf = BytesIO()
        fig.savefig(buf, format="png")
        self.plot.value = buf.getvalue()
        self.plot.layout.display = None
        self.plot_updates += 1

    # -- saving ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the last result as PNG and its settings as JSON beside it (key "panel": the settings).

        path: a .png file; None: a new name in the "save to" folder. Uploaded images are copied
        beside it and named in the JSON, so that the JSON reproduces the run.
        """
        if self.running:
            raise RuntimeError("a run is going: wait for it to end (or press Stop) before saving.")
        if self.result is None:
            raise RuntimeError("nothing to save yet: press Run first.")
        s = dict(self._run_settings)
        if path is None:
            name = "-".join(v.partition(":")[2].replace(os.sep, "_")[:24] or "image" for v in (s["content"], s["style"]))
            path = Path(self.save_dir.value).expanduser() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.png"
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise ValueError(f"save writes a PNG: give a path ending in .png, got {str(path)!r}.")
        ensure_folder(path.parent, path)
        with atomic_group():  # the uploads, the PNG and the JSON: all of them or none
            for key, (name, raw) in self._run_uploads.items():
                copy = path.with_name(f"{path.stem}.{key}{Path(name).suffix.lower() or '.png'}")
                with atomic_write(copy) as f:
                    f.write(raw)
                s[key] = f"path:{copy.resolve()}"
            self.result.save(path, extra={"panel": s})
        return path

    def _save_clicked(self) -> None:
        try:
            p = self.save()
            self._note(f"Saved {p} and {p.with_suffix('.json').name} (the settings: TuningPanel().from_settings(path)).")
        except Exception as e:
            self._note(f"Cannot save: {e}", error=True)


def _total(steps: int | list[int] | tuple[int, ...]) -> int:
    """The steps of a run over all its scales."""
    return steps if isinstance(steps, int) else sum(steps)
