"""Interactive tuning: a panel of ipywidgets that runs `stylize` with a live preview.

    panel = TuningPanel(content="tubingen", style="starry_night")
    panel            # the last value of a cell: shows the panel; press Run, Stop, Save

The run goes in a background thread, so the kernel keeps answering the panel while the
network works: Stop is seen at once, and a second Run is refused while one is going. The
thread updates the preview image and the loss plot at most every `preview_every_s` /
`plot_every_s` seconds (ipywidgets sends trait changes from any thread over the comm). The
thread, the stop and the one-run-per-kernel rule are `nstlib.runner.RunController`'s; the
settings, their JSON and `stylize`'s arguments are `nstlib.panel_settings.PanelSettings`'s.
Everything a student can get wrong (no image, a file that is not an image, a size too small
for the chosen layers, weights that cannot be loaded) ends as a message in the panel.

Save writes the best image as PNG and a JSON beside it with the panel's settings, which
`TuningPanel.from_settings(path)` turns back into the same run. `ComparePanel` puts two
panels' previews side by side and runs them one after the other.
"""

from __future__ import annotations

import html
import json
import os
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any, Mapping

import ipywidgets as W
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, UnidentifiedImageError

from nstlib import data
from nstlib._io import atomic_write
from nstlib.devices import describe_device, pick_device
from nstlib.images import load_image, to_pil
from nstlib.panel_settings import PanelSettings
from nstlib.runner import RunController, Throttle
from nstlib.stylize import StepInfo, StyleResult, stylize
from nstlib.vgg import VGGFeatures, load_vgg, style_layer_preset
from nstlib.weights import ENV_VAR

CONTENT_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")
_SOURCES = ("course", "path", "upload")
_LABEL = "8em"  # one width for the controls' labels, so that they line up


# One network per (weights, pooling, device) for every panel of the process: loaded once, and
# the compare mode's two panels and the main panel share it (inference only, so threads may too).
_nets: dict[tuple[str, str, str], VGGFeatures] = {}
_nets_lock = threading.Lock()
_warm_thread: threading.Thread | None = None


def _extractor(weights: str, pooling: str, device: str) -> VGGFeatures:
    with _nets_lock:
        key = (weights, pooling, device)
        if key not in _nets:
            _nets[key] = load_vgg(weights, pooling=pooling, device=device)
        return _nets[key]


def _warm_up(weights: str, pooling: str, device: str) -> None:
    """Pay, once per process and in the background, what the first run would pay before its
    first preview: building a torch optimizer imports torch._dynamo (1-3 s on a laptop),
    matplotlib loads its fonts, the first forward and backward passes set up their kernels.
    A run started meanwhile does not wait: it loads its images and targets while the import runs."""
    try:
        torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])
        Figure(figsize=(1, 1)).savefig(BytesIO(), format="png")
        if not RunController.started_any.is_set():  # else it would only compete with that run
            img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
            stylize(img, img, extractor=_extractor(weights, pooling, device), device=device, steps=1, progress=False)
    except Exception:  # a real run reports any problem in the panel
        pass


def _start_warm_up(weights: str, pooling: str, device: str) -> None:
    global _warm_thread
    with _nets_lock:
        if _warm_thread is None:
            _warm_thread = threading.Thread(target=_warm_up, args=(weights, pooling, device), daemon=True,
                                            name="nstlib-warm-up")
            _warm_thread.start()


def _layers_of(layer_set: str, arch: str) -> tuple[str, ...]:
    return style_layer_preset(layer_set, arch)


def _row(label: str, widget: W.Widget) -> W.HBox:
    """A label left of `widget`, as wide as the other controls' descriptions (ToggleButtons put theirs on top)."""
    text = W.Label(label, layout={"width": _LABEL, "min_width": _LABEL,
                                  "justify_content": "flex-end", "margin": "0 8px 0 0"})
    # min_height: the HBox would otherwise be as tall as a text line, and its buttons would overlap the next row.
    return W.HBox([text, widget], layout={"min_height": "34px", "align_items": "center"})


def _descendants(box: W.Box) -> list[W.Widget]:
    out = []
    for w in box.children:
        out += [w, *(_descendants(w) if isinstance(w, W.Box) else [])]
    return out


def _status_html(text: str, error: bool = False) -> str:
    """A panel's status line: the text, red when it reports an error."""
    color = "#b00020" if error else "inherit"
    return f'<div style="color:{color};line-height:1.35">{html.escape(text)}</div>'


def _notice_html(text: str, error: bool = False, width: str = "300px") -> str:
    """A panel's note (a refusal, a fallback image): grey, or red for an error."""
    color = "#b00020" if error else "#555"
    return f'<div style="color:{color};max-width:{width};line-height:1.3">{html.escape(text)}</div>'


def _small(markup: str) -> str:
    return f'<div style="font-size:85%;line-height:1.35;color:#444">{markup}</div>'


def _png(image: torch.Tensor | Image.Image) -> bytes:
    buf = BytesIO()
    (image if isinstance(image, Image.Image) else to_pil(image)).save(buf, format="PNG")
    return buf.getvalue()


class _ImageChooser:
    """One image: a course image, a file path or an upload. spec(): 'course:NAME' | 'path:P' | 'upload:NAME'."""

    def __init__(self, what: str, default: str) -> None:
        self.what = what
        names = [(f"{i.key} ({i.role})", i.key) for i in data.list_images()]
        self.source = W.ToggleButtons(options=_SOURCES)
        # No description, indented instead: a blank description shifts a dropdown down in JupyterLab.
        indent = {"margin": f"2px 0 2px calc({_LABEL} + 8px)", "width": "300px"}
        self.course = W.Dropdown(options=names, value=default, layout=indent)
        self.path = W.Text(placeholder="path/to/image.jpg", layout=indent)
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload", layout={"margin": indent["margin"]})
        # Flat, not a VBox: a VBox nested in the panel's column clips its dropdown in JupyterLab.
        self.widgets = [_row(what, self.source), self.course, self.path, self.upload]
        self.source.observe(lambda _: self._show(), "value")
        self._show()

    def _show(self) -> None:
        for name, w in zip(_SOURCES, (self.course, self.path, self.upload)):
            w.layout.display = None if self.source.value == name else "none"

    def spec(self) -> str:
        if self.source.value == "course":
            return f"course:{self.course.value}"
        if self.source.value == "path":
            return f"path:{self.path.value.strip()}"
        return f"upload:{self.upload.value[0]['name'] if self.upload.value else ''}"

    def set_spec(self, spec: str) -> None:
        kind, sep, value = str(spec).partition(":")
        if not sep or kind not in _SOURCES:
            raise ValueError(f"{self.what}: expected 'course:NAME' or 'path:PATH', got {spec!r}.")
        if kind == "upload":
            raise ValueError(f"{self.what}: an upload ({value!r}) cannot be restored from settings; "
                             f"the JSON written by Save names a copy of it as 'path:...'.")
        if kind == "course" and value not in [k for _, k in self.course.options]:
            raise ValueError(f"{self.what}: no course image called {value!r}; see nstlib.data.list_images().")
        (self.course if kind == "course" else self.path).value = value
        self.source.value = kind

    def upload_bytes(self) -> tuple[str, bytes] | None:
        if self.source.value != "upload" or not self.upload.value:
            return None
        item = self.upload.value[0]
        return item["name"], bytes(item["content"])

    def load(self, size: int) -> tuple[torch.Tensor, str]:
        """(image (1, 3, H, W) with longest side `size`, a note); ValueError with a hint if impossible."""
        kind, _, value = self.spec().partition(":")
        if kind == "course":
            return data.load_or_fallback(value, size, progress=False)
        if kind == "path":
            if not value:
                raise ValueError(f"no {self.what.lower()} image chosen: type a file path, or pick a course image.")
            return load_image(value, size), value
        up = self.upload_bytes()
        if up is None:
            raise ValueError(f"no {self.what.lower()} image uploaded yet: press 'upload' and choose a file.")
        name, raw = up
        try:
            img = Image.open(BytesIO(raw))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise ValueError(f"the uploaded file {name!r} is not an image Pillow can read ({type(e).__name__}); "
                             f"upload a PNG, JPEG or WebP.") from None
        return load_image(img, size), f"uploaded {name}"


class TuningPanel:
    """A tuning panel: controls, Run / Stop / Save, a live preview and a loss plot.

    For tests and notebooks: run(), stop(), wait(timeout), save(path), settings(),
    from_settings(dict or JSON path); attributes preview_updates, first_preview_s (seconds from
    run() to the first preview), result (the last StyleResult), error, message (the status line),
    notice (the last note or refusal), refused (Runs refused while running).
    """

    def __init__(self, content: str = "tubingen", style: str = "starry_night", *, size: int | None = None,
                 steps: int | None = None, weights: str | None = None, device: str | None = None,
                 save_dir: str | os.PathLike = "out/tuning", preview_every_s: float = 0.2,
                 plot_every_s: float = 0.5) -> None:
        dev = pick_device(device)
        gpu = dev.type != "cpu"
        self.weights = weights or os.environ.get(ENV_VAR, "").strip() or "torchvision"
        _start_warm_up(self.weights, "avg", dev.type)  # while the panel is built and shown
        self.preview_every_s, self.plot_every_s = preview_every_s, plot_every_s
        self._arch = "vgg19"  # of the network last loaded: it names Choi & Kim's layers
        # One run at a time per process (shared by every panel); previews and plots throttled.
        self._runner = RunController("nstlib-tuning")
        self._preview_throttle, self._plot_throttle = Throttle(preview_every_s), Throttle(plot_every_s)
        self.result: StyleResult | None = None
        self.error: BaseException | None = None
        self.preview_updates = self.plot_updates = self.refused = 0
        self.first_preview_s: float | None = None
        self.message = self.notice = ""
        self._run_settings: dict[str, Any] = {}
        self._run_panel_settings = PanelSettings()
        self._run_uploads: dict[str, tuple[str, bytes]] = {}
        self._losses: list[tuple[int, float]] = []
        self._fig = Figure(figsize=(3.6, 2.0), dpi=80, layout="constrained")

        log = dict(base=10, step=0.25, readout_format=".1e", continuous_update=False)
        self.content, self.style = _ImageChooser("Content", content), _ImageChooser("Style", style)
        # A second painting (a course image) blended into the first: its share of the Gram targets.
        paintings = [(f"{i.key} ({i.role})", i.key) for i in data.list_images()]
        self.style2 = W.Dropdown(options=[("none", "")] + paintings, value="", description="2nd style")
        self.blend = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="its share",
                                   readout_format=".2f", continuous_update=False)
        self.colors = W.Dropdown(options=[("the painting's", "painting"), ("the photo's: luminance only", "luminance"),
                                          ("the photo's: histogram (Cholesky)", "histogram-cholesky"),
                                          ("the photo's: histogram (PCA)", "histogram-pca")],
                                 value="painting", description="colours")
        self.size = W.IntSlider(value=size or (512 if gpu else 128), min=16, max=1024, step=16, description="size (px)")
        self.steps = W.IntSlider(value=steps or (500 if gpu else 150), min=1, max=2000, description="steps")
        self.optimizer = W.ToggleButtons(options=["lbfgs", "adam"])
        self.variant = W.ToggleButtons(options=["gatys", "normalized"])
        self.ratio = W.FloatLogSlider(value=1e-3, min=-7, max=1, description="α/β", **log)
        self.lambda_os = W.FloatLogSlider(value=1e-2, min=-6, max=2, description="λ_os", **log)
        self.layer_set = W.Dropdown(options=[("Gatys: relu1_1 … relu5_1", "gatys"),
                                             ("Choi & Kim: last ReLU per block", "choi-kim")], description="style layers")
        self.layer_on = [W.Checkbox(value=True, indent=False, layout={"width": "7em"}) for _ in range(5)]
        self.layer_w = [W.FloatLogSlider(value=0.2, min=-3, max=1, **log) for _ in range(5)]
        self.content_layer = W.Dropdown(options=CONTENT_LAYERS, value="relu4_2", description="content layer")
        self.init = W.ToggleButtons(options=["noise", "content", "style"])
        self.pooling = W.ToggleButtons(options=["avg", "max"])
        self.tv_weight = W.BoundedFloatText(value=0.0, min=0.0, max=1e12, description="TV weight")
        self.seed = W.IntText(value=0, description="seed")
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if dev.type == "mps" else [])
        self.device = W.Dropdown(options=devices, value=dev.type, description="device")

        self.run_button = W.Button(description="Run", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.save_button = W.Button(description="Save", icon="save")
        self.save_dir = W.Text(value=str(save_dir), description="save to")
        self.preview = W.Image(value=_png(Image.new("RGB", (64, 64), (200, 200, 200))), format="png",
                               layout={"width": "256px", "object_fit": "contain"})
        # The plot and the thumbnails stay hidden until they have a picture (no broken-image icons).
        self.plot = W.Image(format="png", layout={"width": "288px", "display": "none"})
        self.thumbs = W.HBox([W.Image(format="png", layout={"width": "96px"}) for _ in range(2)], layout={"display": "none"})
        self.progress = W.IntProgress(value=0, min=0, max=1, layout={"width": "256px"})
        self.status = W.HTML()
        self.notice_box = W.HTML()
        self.info = W.HTML()
        for w, cls in ((self.run_button, "nst-run"), (self.stop_button, "nst-stop"), (self.save_button, "nst-save"),
                       (self.preview, "nst-preview"), (self.status, "nst-status"), (self.notice_box, "nst-notice")):
            w.add_class(cls)

        weights_rows = [W.HBox([cb, sl], layout={"margin": "0 0 0 1em"}) for cb, sl in zip(self.layer_on, self.layer_w)]
        self.controls = W.VBox([
            *self.content.widgets, *self.style.widgets, self.style2, self.blend, self.colors, self.size, self.steps, _row("optimizer", self.optimizer),
            _row("loss", self.variant), self.ratio, self.lambda_os, self.layer_set, *weights_rows, self.content_layer,
            _row("init", self.init), _row("pooling", self.pooling), self.tv_weight, self.seed, self.device,
        ], layout={"width": "480px", "min_width": "480px"})
        for w in _descendants(self.controls):
            if isinstance(w, W.ToggleButtons):
                w.style.button_width = "7.5em"
            if not isinstance(w, W.Checkbox) and getattr(w, "style", None) is not None and w.style.has_trait("description_width"):
                w.style.description_width = _LABEL
            if isinstance(w, (W.Dropdown, W.Text, W.FloatText, W.IntText, W.IntSlider, W.FloatSlider, W.FloatLogSlider)) and w.description:
                w.layout.width = "440px"
        self.view = W.VBox([W.HBox([self.run_button, self.stop_button, self.save_button]), self.save_dir,
                            self.notice_box, self.preview, self.progress, self.status, self.plot, self.thumbs, self.info],
                           layout={"width": "420px", "min_width": "300px"})
        self.widget = W.HBox([self.controls, self.view])
        self.widget.add_class("nst-panel")

        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.save_button.on_click(lambda _: self._save_clicked())
        self.variant.observe(lambda _: self._show_weights(), "value")
        self.layer_set.observe(lambda _: self._label_layers(), "value")
        self.style2.observe(lambda _: self._show_weights(), "value")
        self._show_weights()
        self._set_message("Ready: press Run.")
        self._cpu_note = "" if gpu else (
            f"No GPU here: the size starts at {self.size.value} px, where a step (and a new preview) takes a "
            f"fraction of a second; every doubling of the size makes each step about 4x slower.")
        self._net_for_ui()

    # -- what the student sees -----------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    def _set_message(self, text: str, error: bool = False) -> None:
        self.message = text
        self.status.value = _status_html(text, error)

    def _note(self, text: str, error: bool = False) -> None:
        self.notice = text
        self.notice_box.value = _notice_html(text, error)

    def _show_weights(self) -> None:
        gatys = self.variant.value == "gatys"
        self.ratio.layout.display = None if gatys else "none"
        self.lambda_os.layout.display = "none" if gatys else None
        self.blend.layout.display = None if self.style2.value else "none"

    def _label_layers(self) -> None:
        for cb, name in zip(self.layer_on, _layers_of(self.layer_set.value, self._arch)):
            cb.description = name

    def _net_for_ui(self) -> None:
        """Load the default network now, so that the weights line shows and Run starts fast."""
        try:
            net = _extractor(self.weights, self.pooling.value, self.device.value)
            self._arch = net.arch
            self._show_info(net, self.device.value)
        except Exception as e:  # offline, a missing file: the message says how to fix it
            self._set_message(f"Cannot load the VGG weights: {e}", error=True)
            self.info.value = _small(html.escape(self._cpu_note))
        self._label_layers()

    def _show_info(self, net: VGGFeatures, device: str) -> None:
        lines = [f"weights: {net.describe()}", f"device: {describe_device(device)}"]
        if device == "cpu" and self._cpu_note:
            lines.append(self._cpu_note)
        self.info.value = _small("<br>".join(map(html.escape, lines)))

    # -- settings ---------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """Every control's value, JSON-ready; `from_settings` takes it back."""
        return self._panel_settings().to_dict()

    def _panel_settings(self) -> PanelSettings:
        names = _layers_of(self.layer_set.value, self._arch)
        return PanelSettings(
            content=self.content.spec(), style=self.style.spec(), style2=self.style2.value,
            blend=self.blend.value, colors=self.colors.value, size=self.size.value,
            steps=self.steps.value, optimizer=self.optimizer.value, variant=self.variant.value,
            alpha_over_beta=self.ratio.value, lambda_os=self.lambda_os.value, style_layer_set=self.layer_set.value,
            style_weights={n: (s.value if cb.value else 0.0) for n, cb, s in zip(names, self.layer_on, self.layer_w)},
            content_layer=self.content_layer.value, init=self.init.value, pooling=self.pooling.value,
            tv_weight=self.tv_weight.value, seed=self.seed.value, device=self.device.value, weights=self.weights,
        )

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
            s["steps"] = meta["steps_done"]
        if "device" in s and s["device"] not in self.device.options:
            self._note(f"device {s['device']!r} is not available here; using {self.device.value}.", error=True)
            s.pop("device")
        if "weights" in s and s["weights"] != self.weights:
            self.weights = s.pop("weights")
            self._net_for_ui()  # another network may have other layer names (VGG-16 or VGG-19)
        simple = {"size": self.size, "steps": self.steps, "optimizer": self.optimizer, "variant": self.variant,
                  "alpha_over_beta": self.ratio, "lambda_os": self.lambda_os, "style_layer_set": self.layer_set,
                  "content_layer": self.content_layer, "init": self.init, "pooling": self.pooling,
                  "tv_weight": self.tv_weight, "seed": self.seed, "device": self.device, "style2": self.style2,
                  "blend": self.blend, "colors": self.colors}
        for key, w in simple.items():
            if key in s:
                try:
                    w.value = s[key]
                except Exception as e:  # a TraitError: not one of the options, wrong type
                    raise ValueError(f"setting {key}={s[key]!r} is not possible here: {e}") from None
        for key, chooser in (("content", self.content), ("style", self.style)):
            if key in s:
                chooser.set_spec(s[key])
        if "style_weights" in s:
            names = _layers_of(self.layer_set.value, self._arch)
            if list(s["style_weights"]) != list(names):
                raise ValueError(f"style_weights must name the layers {list(names)} in that order, got {list(s['style_weights'])}.")
            for cb, sl, v in zip(self.layer_on, self.layer_w, s["style_weights"].values()):
                cb.value = v > 0
                sl.value = v if v > 0 else 0.2
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
        self._run_panel_settings = self._panel_settings()
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
        kwargs = s.stylize_kwargs()  # ValueError if every style layer is off with the normalized loss
        styles: Any = style
        if s.style2:  # two paintings: the second's share of the Gram targets is the slider's
            second, note = data.load_or_fallback(s.style2, size=s.size)
            styles = [style, second]
            if s.blend in (0.0, 1.0):
                self._note(f"The share of the 2nd style is {s.blend:g}: only one painting counts.")
        self.progress.max, self.progress.value = s.steps, 0
        self._set_message("Computing the targets…")
        self.result = stylize(content, styles, **kwargs, extractor=net, callback=self._on_step, callback_every=1,
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
        self._set_message(f"{how}: {r.steps_done} of {r.settings['steps']} steps in {r.wall_time:.1f} s; "
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
        path.parent.mkdir(parents=True, exist_ok=True)
        for key, (name, raw) in self._run_uploads.items():
            copy = path.with_name(f"{path.stem}.{key}{Path(name).suffix.lower() or '.png'}")
            with atomic_write(copy) as f:
                f.write(raw)
            s[key] = f"path:{copy.resolve()}"
        self.result.save(path)
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        with atomic_write(path.with_suffix(".json"), "w") as f:
            json.dump({"panel": s, **meta}, f, indent=2)
        return path

    def _save_clicked(self) -> None:
        try:
            p = self.save()
            self._note(f"Saved {p} and {p.with_suffix('.json').name} (the settings: TuningPanel().from_settings(path)).")
        except Exception as e:
            self._note(f"Cannot save: {e}", error=True)


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


# The layer explorer reuses this module's helpers, so it is imported last (no import cycle).
from nstlib.explorer import LayerExplorer  # noqa: E402, F401
