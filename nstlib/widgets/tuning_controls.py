"""The tuning panel's controls and layout: the widgets, read into a `PanelSettings` and set from one.

How a run goes (run, stop, wait, save, the preview and the plot) is `nstlib.widgets.tuning`'s.
"""

from __future__ import annotations

import html
from typing import Any, Mapping

import ipywidgets as W
import torch
from PIL import Image

from nstlib import data
from nstlib.devices import describe_device
from nstlib.panel_settings import PanelSettings
from nstlib.settings import FAST_STEPS
from nstlib.vgg import VGGFeatures, style_layer_preset
from nstlib.widgets.common import (_LABEL, _descendants, _extractor, _ImageChooser, _notice_html, _png, _row, _small,
                                   _status_html)

CONTENT_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")
_LOG = dict(base=10, step=0.25, readout_format=".1e", continuous_update=False)


def _layers_of(layer_set: str, arch: str) -> tuple[str, ...]:
    return style_layer_preset(layer_set, arch)


class TuningControls:
    """Every widget of a tuning panel and its layout: `controls` (the settings, left), `view`
    (buttons, preview, plot, status, right) and `widget` (both). `_read()` gives the controls as a
    PanelSettings, `_apply(dict)` sets them; message and notice are the status line and the note.
    """

    def __init__(self, content: str, style: str, *, preset: str, size: int, steps: int, paper_steps: int,
                 device: str, weights: str, save_dir: str) -> None:
        self.weights = weights
        self._preset_steps = {"fast": FAST_STEPS[0], "paper": paper_steps}  # the steps a preset starts with
        self._arch = "vgg19"  # of the network last loaded: it names Choi & Kim's layers
        self.message = self.notice = ""
        self._cpu_note = ""  # the info line's advice on a CPU (the panel's)
        self._build_settings(content, style, preset, size, steps, device)
        self._build_view(save_dir)
        self._lay_out()
        self.variant.observe(lambda _: self._show_weights(), "value")
        self.layer_set.observe(lambda _: self._label_layers(), "value")
        self.style2.observe(lambda _: self._show_weights(), "value")
        self.preset.observe(lambda _: self._preset_changed(), "value")
        for w in (self.size, self.steps, self.init):
            w.observe(lambda _: self._show_schedule(), "value")
        self._show_weights()
        self._show_schedule()

    def _build_settings(self, content: str, style: str, preset: str, size: int, steps: int, device: str) -> None:
        """The controls that are the run's settings (what PanelSettings holds)."""
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
        # fast: from the photo, coarse to fine, bfloat16 where faster; paper: noise start, one scale.
        self.preset = W.ToggleButtons(options=["fast", "paper"], value=preset,
                                      tooltips=["from the photo, coarse to fine, bfloat16 where faster",
                                                "as in the paper: from noise, one scale"])
        self.size = W.IntSlider(value=size, min=16, max=1024, step=16, description="size (px)")
        self.steps = W.IntSlider(value=steps, min=1, max=2000, description="steps")
        # What the run will do: its scales and steps (the steps slider is the first scale's).
        self.schedule_line = W.HTML(layout={"margin": f"0 0 4px calc({_LABEL} + 8px)"})
        self.schedule_line.add_class("nst-schedule")
        self.optimizer = W.ToggleButtons(options=["lbfgs", "adam"])
        self.variant = W.ToggleButtons(options=["gatys", "normalized"])
        # How the style is compared (notebook 8): the Gram matrix, or another distance between feature distributions.
        self.style_loss = W.Dropdown(options=[("Gram matrix (Gatys)", "gram"), ("mean and std per channel", "mean-std"),
                                              ("MMD, Gaussian kernel", "mmd-gaussian"), ("Wasserstein-2, Gaussian fits", "w2"),
                                              ("sliced Wasserstein", "sliced")], value="gram", description="style as")
        self.ratio = W.FloatLogSlider(value=1e-3, min=-7, max=1, description="α/β", tooltip="on the paper's scale: 1e-3 puts the photo and the painting in balance on the loaded network (notebook 4's r*)", **_LOG)
        self.lambda_os = W.FloatLogSlider(value=1e-2, min=-6, max=2, description="λ_os", **_LOG)
        self.layer_set = W.Dropdown(options=[("Gatys: relu1_1 … relu5_1", "gatys"),
                                             ("Choi & Kim: last ReLU per block", "choi-kim")], description="style layers")
        self.layer_on = [W.Checkbox(value=True, indent=False, layout={"width": "7em"}) for _ in range(5)]
        self.layer_w = [W.FloatLogSlider(value=0.2, min=-3, max=1, **_LOG) for _ in range(5)]
        self.content_layer = W.Dropdown(options=CONTENT_LAYERS, value="relu4_2", description="content layer")
        self.init = W.ToggleButtons(options=["noise", "content", "style"], value="content" if preset == "fast" else "noise")
        self.pooling = W.ToggleButtons(options=["avg", "max"])
        self.tv_weight = W.BoundedFloatText(value=0.0, min=0.0, max=1e12, description="TV weight")
        self.seed = W.IntText(value=0, description="seed")
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if device == "mps" else [])
        self.device = W.Dropdown(options=devices, value=device, description="device")

    def _build_view(self, save_dir: str) -> None:
        """The buttons, the preview, the plot and the status lines."""
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

    def _lay_out(self) -> None:
        weights_rows = [W.HBox([cb, sl], layout={"margin": "0 0 0 1em"}) for cb, sl in zip(self.layer_on, self.layer_w)]
        self.controls = W.VBox([
            *self.content.widgets, *self.style.widgets, self.style2, self.blend, self.colors,
            _row("preset", self.preset), self.size, self.steps, self.schedule_line, _row("optimizer", self.optimizer), _row("loss", self.variant), self.style_loss, self.ratio, self.lambda_os, self.layer_set,
            *weights_rows, self.content_layer, _row("init", self.init), _row("pooling", self.pooling), self.tv_weight,
            self.seed, self.device,
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

    def _preset_changed(self) -> None:
        """A preset sets where the run starts and the steps of its first scale (both can be changed after)."""
        self.init.value = "content" if self.preset.value == "fast" else "noise"
        self.steps.value = self._preset_steps[self.preset.value]
        self._show_schedule()

    def _show_schedule(self) -> None:
        s = PanelSettings(preset=self.preset.value, size=self.size.value, steps=self.steps.value, init=self.init.value)
        self.schedule = s.describe_schedule()
        self.schedule_line.value = _small(html.escape(self.schedule))

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

    # -- the settings ----------------------------------------------------------------------
    def _read(self) -> PanelSettings:
        """The controls as a PanelSettings."""
        names = _layers_of(self.layer_set.value, self._arch)
        return PanelSettings(
            content=self.content.spec(), style=self.style.spec(), style2=self.style2.value,
            blend=self.blend.value, colors=self.colors.value, preset=self.preset.value, size=self.size.value,
            steps=self.steps.value, optimizer=self.optimizer.value, variant=self.variant.value, style_loss=self.style_loss.value,
            alpha_over_beta=self.ratio.value, lambda_os=self.lambda_os.value, style_layer_set=self.layer_set.value,
            style_weights={n: (s.value if cb.value else 0.0) for n, cb, s in zip(names, self.layer_on, self.layer_w)},
            content_layer=self.content_layer.value, init=self.init.value, pooling=self.pooling.value,
            tv_weight=self.tv_weight.value, seed=self.seed.value, device=self.device.value, weights=self.weights,
        )

    def _apply(self, s: Mapping[str, Any]) -> None:
        """Set the controls named in `s` (keys of PanelSettings, checked before); ValueError if one is impossible."""
        # The preset first: it sets init and steps, which the settings may then change.
        simple = {"preset": self.preset, "size": self.size, "steps": self.steps, "optimizer": self.optimizer, "variant": self.variant,
                  "style_loss": self.style_loss, "alpha_over_beta": self.ratio, "lambda_os": self.lambda_os, "style_layer_set": self.layer_set,
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
