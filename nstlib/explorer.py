"""A live layer explorer: what one VGG layer sees in an image, what it keeps, what a channel wants.

    ex = LayerExplorer("tubingen", "relu3_1")
    ex               # the last value of a cell: shows the explorer

Views: the layer's 16 most active channels (a montage), the chosen channel over the image,
the layer's Gram matrix (log scale) and the chosen channel's row of it; two live jobs, one at a
time, in the background (`nstlib.runner.RunController`): a content reconstruction from faint
noise ("what this layer keeps") and an activation maximisation of the chosen channel ("what
this channel wants"). Features are computed once per (image, layer) and cached, so that a new
channel only redraws. Every error (a bad path, an image too small for the layer) ends as a
message in the explorer, never a traceback.
"""

from __future__ import annotations

import html
import json
import os
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from nstlib._io import atomic_write
from nstlib.devices import pick_device
from nstlib.images import load_image, to_pil
from nstlib.losses import gram_matrix
from nstlib.runner import RunController, Throttle
from nstlib.stylize import StepInfo, stylize
from nstlib.vgg import VGGFeatures
from nstlib.weights import ENV_VAR

TOP = 16  # channels in the montage
_TILE = 80  # px per montage tile
_VIEW = 256  # px of the channel and Gram views


def _rgb(values: np.ndarray, cmap: str) -> np.ndarray:
    """values in [0, 1] (H, W) -> uint8 RGB (H, W, 3) through a matplotlib colormap."""
    return (colormaps[cmap](np.clip(values, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)


def _unit(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _png_bytes(img: Image.Image) -> bytes:
    buf = BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _blank(px: int = 64) -> bytes:
    return _png_bytes(Image.new("RGB", (px, px), (225, 225, 225)))


class _LayerMaps:
    """What one (image, layer) gives: features (C, H, W), channels by mean activation, Gram, montage."""

    def __init__(self, feats: torch.Tensor) -> None:
        self.feats = feats  # (C, H, W) float32 on the CPU
        c = feats.shape[0]
        means = feats.reshape(c, -1).mean(1)
        self.means = means.numpy()
        self.order = np.argsort(-self.means, kind="stable").tolist()
        self.gram = gram_matrix(feats[None], normalize=True)[0].numpy()
        self.montage_png = self._montage()
        self.gram_log, self.gram_rgb = self._gram_image()

    def _montage(self) -> bytes:
        channels = self.order[:TOP]
        ncols = 4
        nrows = (len(channels) + ncols - 1) // ncols
        label_h = 14
        sheet = Image.new("RGB", (ncols * (_TILE + 4), nrows * (_TILE + label_h + 4)), (255, 255, 255))
        draw = ImageDraw.Draw(sheet)
        for i, ch in enumerate(channels):
            tile = Image.fromarray(_rgb(_unit(self.feats[ch].numpy()), "viridis")).resize((_TILE, _TILE), Image.NEAREST)
            x, y = (i % ncols) * (_TILE + 4) + 2, (i // ncols) * (_TILE + label_h + 4) + 2
            draw.text((x, y), f"ch {ch}", fill=(0, 0, 0))
            sheet.paste(tile, (x, y + label_h))
        return _png_bytes(sheet)

    def _gram_image(self) -> tuple[np.ndarray, np.ndarray]:
        a = np.abs(self.gram)
        tiny = max(float(a.max()), 1e-30) * 1e-6  # six decades: dead channels stay drawable
        lg = np.log10(a + tiny)
        return lg, _rgb(_unit(lg), "viridis")


class LayerExplorer:
    """Controls and live views of one VGG layer; see the module docstring.

    For tests and notebooks: set_image(spec or tensor), set_layer(name), set_channel(k),
    layer, channel, top_channels, montage_png, channel_png, gram_png, gram_row_png,
    reconstruct(steps), maximise(steps), stop(), wait(timeout), save(path); attributes
    preview_updates, last_update_s, message (status line), notice (last note or refusal),
    recon_image / wants_image / wants_start (tensors, after a job), error.
    """

    def __init__(self, image: Any = "tubingen", layer: str = "relu3_1", *, size: int | None = None,
                 weights: str | None = None, device: str | None = None, save_dir: str | os.PathLike = "out/explorer",
                 preview_every_s: float = 0.2, job_size: int | None = None) -> None:
        dev = pick_device(device)
        gpu = dev.type != "cpu"
        self.device = dev.type
        self.size = int(size or (512 if gpu else 256))
        self.job_size = int(job_size or (256 if gpu else 128))
        self.weights = weights or os.environ.get(ENV_VAR, "").strip() or "torchvision"
        self.save_dir = Path(save_dir)
        self._runner = RunController("nstlib-explorer")
        self._throttle = Throttle(preview_every_s)
        self.preview_every_s = preview_every_s
        self.preview_updates = 0
        self.last_update_s: float | None = None
        self.message = self.notice = ""
        self.error: BaseException | None = None
        self.recon_image: torch.Tensor | None = None
        self.wants_image: torch.Tensor | None = None
        self.wants_start: torch.Tensor | None = None
        self.last_job: str | None = None  # "reconstruct" | "maximise": the one whose image Save shows
        self._net: VGGFeatures | None = None
        self._image: torch.Tensor | None = None
        self._image_spec = ""
        self._version = 0  # +1 per image: the key of the feature cache
        self._cache: dict[tuple[int, str], _LayerMaps] = {}
        self._quiet = False  # True while the code itself sets controls

        course = image if isinstance(image, str) and ":" not in image else "tubingen"
        self.chooser = _ImageChooser("Image", course if course in _course_keys() else "tubingen")
        self.chooser.path.continuous_update = False
        self.layer_dd = W.Dropdown(description="layer", layout={"width": "440px"})
        self.channel_slider = W.IntSlider(value=0, min=0, max=0, description="channel", continuous_update=False,
                                          layout={"width": "440px"})
        for w in (self.layer_dd, self.channel_slider):
            w.style.description_width = _LABEL
        self.recon_button = W.Button(description="Start: what it keeps", button_style="success", icon="play",
                                     layout={"width": "auto"})
        self.wants_button = W.Button(description="Start: what it wants", button_style="success", icon="play",
                                     layout={"width": "auto"})
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.save_button = W.Button(description="Save", icon="save")
        self.status, self.notice_box, self.caption = W.HTML(), W.HTML(), W.HTML()
        self.montage = W.Image(value=_blank(), format="png", layout={"width": "344px"})
        self.channel_view = W.Image(value=_blank(), format="png", layout={"width": f"{_VIEW}px", "object_fit": "contain"})
        self.gram_view = W.Image(value=_blank(), format="png", layout={"width": f"{_VIEW}px"})
        self.row_view = W.Image(value=_blank(), format="png", layout={"width": "344px"})
        self.recon_view = W.Image(value=_blank(), format="png", layout={"width": "200px", "object_fit": "contain"})
        self.wants_view = W.Image(value=_blank(), format="png", layout={"width": "200px", "object_fit": "contain"})
        for w, cls in ((self.montage, "nst-montage"), (self.channel_view, "nst-channel"), (self.gram_view, "nst-gram"),
                       (self.row_view, "nst-gram-row"), (self.recon_view, "nst-recon"), (self.wants_view, "nst-wants"),
                       (self.status, "nst-status"), (self.notice_box, "nst-notice"), (self.stop_button, "nst-stop"),
                       (self.save_button, "nst-save"), (self.recon_button, "nst-recon-start"),
                       (self.wants_button, "nst-wants-start")):
            w.add_class(cls)

        def titled(text: str, *ws: W.Widget) -> W.VBox:
            return W.VBox([W.HTML(f"<b>{html.escape(text)}</b>"), *ws])

        self.controls = W.VBox([*self.chooser.widgets, self.layer_dd, self.channel_slider,
                                W.HBox([self.recon_button, self.wants_button]),
                                W.HBox([self.stop_button, self.save_button]), self.notice_box, self.status, self.caption],
                               layout={"width": "480px", "min_width": "480px"})
        self.views = W.VBox([
            W.HBox([titled("the chosen channel on the image", self.channel_view),
                    titled(f"the {TOP} most active channels", self.montage)]),
            W.HBox([titled("Gram matrix, log10 |G| (chosen row boxed)", self.gram_view),
                    titled("the chosen channel's row of G", self.row_view)]),
            W.HBox([titled("what this layer keeps", self.recon_view),
                    titled("what this channel wants", self.wants_view)]),
        ])
        self.widget = W.HBox([self.controls, self.views])
        self.widget.add_class("nst-explorer")

        self.recon_button.on_click(lambda _: self.reconstruct())
        self.wants_button.on_click(lambda _: self.maximise())
        self.stop_button.on_click(lambda _: self.stop())
        self.save_button.on_click(lambda _: self._save_clicked())
        self.layer_dd.observe(lambda ch: None if self._quiet else self.set_layer(ch["new"]), "value")
        self.channel_slider.observe(lambda ch: None if self._quiet else self.set_channel(ch["new"]), "value")
        for w in (self.chooser.source, self.chooser.course, self.chooser.path, self.chooser.upload):
            w.observe(lambda _: None if self._quiet else self._image_from_chooser(), "value")

        self._layer = layer
        self._channel = 0
        try:
            self._net = _extractor(self.weights, "avg", self.device)
        except Exception as e:  # offline, a missing file: the message says how to fix it
            self._set_message(f"Cannot load the VGG weights: {e}", error=True)
            return
        if layer not in self._net.names:
            self._set_message(f"No layer {layer!r} in {self._net.arch}; showing relu3_1.", error=True)
            self._layer = "relu3_1"
        self._label_layers()
        if isinstance(image, str) and ":" not in image:
            self._image_from_chooser()
        else:
            self.set_image(image)

    # -- what the student sees -----------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    def _set_message(self, text: str, error: bool = False) -> None:
        self.message = text
        self.status.value = _status_html(text, error)

    def _note(self, text: str, error: bool = False) -> None:
        self.notice = text
        self.notice_box.value = _notice_html(text, error, width="440px")

    def _label_layers(self) -> None:
        """Dropdown labels: name, C x H x W at the current image size, receptive field."""
        if self._net is None:
            return
        hw = tuple(self._image.shape[-2:]) if self._image is not None else (self.size, self.size)
        options = []
        for r in self._net.layer_table(hw):
            c, h, w = r.shape
            small = "  (image too small)" if min(h, w) < 1 else ""
            options.append((f"{r.name}  {c}x{h}x{w}  RF {r.receptive_field}px{small}", r.name))
        self._quiet = True
        try:
            self.layer_dd.options = options
            self.layer_dd.value = self._layer
        finally:
            self._quiet = False

    # -- the Python API -----------------------------------------------------------------------
    @property
    def layer(self) -> str:
        return self._layer

    @property
    def channel(self) -> int:
        return self._channel

    @property
    def montage_png(self) -> bytes:
        return self.montage.value

    @property
    def channel_png(self) -> bytes:
        return self.channel_view.value

    @property
    def gram_png(self) -> bytes:
        return self.gram_view.value

    @property
    def gram_row_png(self) -> bytes:
        return self.row_view.value

    @property
    def top_channels(self) -> list[int]:
        """The layer's channels by mean activation, most active first ([] before the first maps)."""
        maps = self._maps_now()
        return list(maps.order) if maps is not None else []

    @property
    def running(self) -> bool:
        return self._runner.running

    def settings(self) -> dict[str, Any]:
        return {"image": self._image_spec, "layer": self._layer, "channel": self._channel, "size": self.size,
                "weights": self.weights, "device": self.device, "job_size": self.job_size}

    def set_image(self, image: Any) -> bool:
        """A course name, 'course:NAME', 'path:P', a file path or an image tensor; False (and a message) if it fails."""
        try:
            if isinstance(image, torch.Tensor):
                img, spec = load_image(image.detach().cpu(), self.size), "tensor"
            else:
                text = str(image)
                kind, sep, value = text.partition(":")
                if not sep or kind not in ("course", "path"):
                    kind, value = ("course", text) if text in _course_keys() else ("path", text)
                self._quiet = True
                try:
                    self.chooser.set_spec(f"{kind}:{value}")
                finally:
                    self._quiet = False
                return self._image_from_chooser()
        except Exception as e:
            self._set_message(f"Cannot use this image: {e}", error=True)
            return False
        return self._use_image(img, spec, "")

    def _image_from_chooser(self) -> bool:
        try:
            img, note = self.chooser.load(self.size)
        except Exception as e:  # a missing file, not an image, nothing uploaded
            self._set_message(f"Cannot load the image: {e}", error=True)
            return False
        return self._use_image(img, self.chooser.spec(), note)

    def _use_image(self, img: torch.Tensor, spec: str, note: str) -> bool:
        self._image, self._image_spec = img, spec
        self._version += 1
        self._cache.clear()
        self._label_layers()
        self._note(note if note.startswith("Could not") else "")
        return self._update(new_layer=True)

    def set_layer(self, name: str) -> bool:
        """Show layer `name` (its channel 0); False (and a message) if impossible."""
        if self._net is None:
            return False
        if name not in self._net.names:
            self._set_message(f"No layer {name!r} in {self._net.arch}; pick one of the list.", error=True)
            return False
        self._layer, self._channel = name, 0
        self._label_layers()
        return self._update(new_layer=True)

    def set_channel(self, k: int) -> bool:
        """Show channel k of the layer: only redraws (the features are cached)."""
        maps = self._maps_now()
        if maps is None:
            return False
        c = maps.feats.shape[0]
        if not 0 <= int(k) < c:
            self._set_message(f"{self._layer} has channels 0..{c - 1}, not {k}.", error=True)
            return False
        self._channel = int(k)
        return self._update(new_layer=False)

    # -- the maps ------------------------------------------------------------------------------
    def _maps_now(self) -> _LayerMaps | None:
        return self._cache.get((self._version, self._layer))

    def _maps(self) -> _LayerMaps:
        key = (self._version, self._layer)
        if key not in self._cache:
            assert self._net is not None and self._image is not None
            dev = next(self._net.parameters()).device
            with torch.no_grad():
                f = self._net.extract(self._image.to(dev), [self._layer])[self._layer][0]
            self._cache[key] = _LayerMaps(f.float().cpu())
        return self._cache[key]

    def _update(self, new_layer: bool) -> bool:
        if self._net is None or self._image is None:
            return False
        t0 = time.perf_counter()
        try:
            maps = self._maps()
        except ValueError as e:  # too small for the layer
            self._set_message(f"Cannot show {self._layer}: {e}", error=True)
            return False
        c = maps.feats.shape[0]
        self._channel = min(self._channel, c - 1)
        self._quiet = True
        try:
            self.channel_slider.max = c - 1
            self.channel_slider.value = self._channel
        finally:
            self._quiet = False
        if new_layer:
            self.montage.value = maps.montage_png
        self.channel_view.value = self._channel_overlay(maps)
        self.gram_view.value = self._gram_boxed(maps)
        self.row_view.value = self._gram_row(maps)
        self.last_update_s = time.perf_counter() - t0
        k = self._channel
        rank = maps.order.index(k) + 1
        _, h, w = maps.feats.shape
        self._set_message(f"{self._image_spec}: {self._layer} ({c}x{h}x{w}), channel {k}: mean activation "
                          f"{maps.means[k]:.3g}, rank {rank} of {c}. Updated in {self.last_update_s * 1000:.0f} ms.")
        return True

    def _channel_overlay(self, maps: _LayerMaps) -> bytes:
        img = self._image
        assert img is not None
        h, w = img.shape[-2:]
        scale = _VIEW / max(h, w)
        hh, ww = max(1, round(h * scale)), max(1, round(w * scale))
        base = F.interpolate(img.float(), size=(hh, ww), mode="bilinear", align_corners=False, antialias=True)[0]
        m = maps.feats[self._channel][None, None]
        m = F.interpolate(m, size=(hh, ww), mode="bilinear", align_corners=False)[0, 0].numpy()
        u = _unit(m)
        heat = colormaps["hot"](u)[..., :3]
        alpha = 0.7 * u[..., None]  # strong where the channel fires, the photo where it does not
        out = base.permute(1, 2, 0).clamp(0, 1).numpy() * (1 - alpha) + heat * alpha
        return _png_bytes(Image.fromarray((out * 255).astype(np.uint8)))

    def _gram_boxed(self, maps: _LayerMaps) -> bytes:
        c = maps.gram.shape[0]
        px = max(1, _VIEW // c)
        img = Image.fromarray(maps.gram_rgb).resize((c * px, c * px), Image.NEAREST)
        d = ImageDraw.Draw(img)
        k = self._channel
        d.rectangle((0, k * px - 1, c * px - 1, (k + 1) * px), outline=(255, 40, 40), width=max(1, px // 2 or 1))
        return _png_bytes(img)

    def _gram_row(self, maps: _LayerMaps) -> bytes:
        k = self._channel
        row = maps.gram[k]
        fig = Figure(figsize=(4.3, 1.7), dpi=80, layout="constrained")
        ax = fig.add_subplot()
        x = np.arange(row.shape[0])
        ax.plot(x, row, lw=0.8, color="#1f77b4")
        ax.plot([k], [row[k]], "o", color="#d62728", ms=4)
        ax.set_xlim(-0.5, row.shape[0] - 0.5)
        ax.set_xlabel(f"channel j (red: G[{k},{k}])", fontsize=8)
        ax.set_ylabel(f"G[{k}, j]", fontsize=8)
        ax.tick_params(labelsize=7)
        buf = BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    # -- the live jobs -------------------------------------------------------------------------
    def _start(self, job: str, work) -> bool:
        if self._net is None or self._image is None:
            self._note("Nothing to run: load the weights and an image first.", error=True)
            return False

        def before() -> None:
            self.error = None
            self.preview_updates = 0
            self._throttle.every_s = self.preview_every_s
            self._throttle.reset()
            self._note("")
            self.stop_button.disabled = False
            self.recon_button.disabled = self.wants_button.disabled = True

        if self._runner.start(work, on_done=self._ended, on_error=self._failed, before=before):
            self.last_job = job
            return True
        where = "here" if self.running else "in another panel"
        self._note(f"{job.capitalize()} ignored: a run is already going {where}. Press Stop first, or wait for it "
                   f"to end.", error=True)
        return False

    def _ended(self, text: str) -> None:
        self.stop_button.disabled = True
        self.recon_button.disabled = self.wants_button.disabled = False
        self._note(text)

    def _failed(self, e: Exception) -> None:
        self.error = e
        self._ended("")
        self._note(f"The run failed: {e}", error=True)

    def _job_image(self) -> torch.Tensor:
        img = self._image
        assert img is not None
        h, w = img.shape[-2:]
        s = self.job_size / max(h, w)
        size = (max(1, round(h * s)), max(1, round(w * s)))
        return F.interpolate(img.float(), size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)

    def reconstruct(self, steps: int | None = None) -> bool:
        """Start "what this layer keeps": a content reconstruction from faint noise; False if a run is going."""
        steps = int(steps or 100)
        layer, net, device = self._layer, self._net, self.device
        if self._image is None:
            return self._start("reconstruct", lambda stop: None)
        content = self._job_image()

        def on_step(info: StepInfo) -> None:
            if self._throttle.ready():
                self.recon_view.value = _png(info.image)
                self.preview_updates += 1

        def work(stop: threading.Event) -> str:
            r = stylize(content, None, content_layers=[layer], init="noise", noise_level=0.02, steps=steps,
                        callback=on_step, callback_every=1, stop=stop, extractor=net, device=device, progress=False)
            self.recon_image = r.image.detach().cpu()
            self.recon_view.value = _png(self.recon_image)
            self.preview_updates += 1
            how = "stopped" if r.stopped else "done"
            return f"What {layer} keeps: {how} after {r.steps_done} of {steps} steps ({r.wall_time:.1f} s)."

        return self._start("reconstruct", work)

    def maximise(self, steps: int | None = None, *, lr: float = 0.005, tv_weight: float = 5.0, seed: int = 0) -> bool:
        """Start "what this channel wants": activation maximisation; False if a run is going.

        From faint noise around grey, Adam raises the channel's mean activation minus a small
        total-variation penalty; the image is clamped to [0, 1] after each step and softly
        blurred every 5 steps. lr 0.005: Adam moves every pixel by about lr per step whatever the
        gradient's size, and at 0.05 100 steps saturate the picture to a few pure colours. The activation is divided by the layer's mean |activation| on the
        start image, so that tv_weight means the same for Caffe and torchvision weights. On a
        ReLU layer the objective is the conv output before it (it has a gradient where the ReLU
        is off); the activation reported is the layer's.
        """
        steps = int(steps or 100)
        layer, k, net = self._layer, self._channel, self._net
        if net is None:
            return self._start("maximise", lambda stop: None)
        target = "conv" + layer[4:] if layer.startswith("relu") else layer
        dev = next(net.parameters()).device
        g = torch.Generator().manual_seed(seed)
        start = (0.5 + 0.02 * torch.randn(1, 3, self.job_size, self.job_size, generator=g)).clamp(0, 1)
        blur = torch.tensor([1.0, 2.0, 1.0])
        blur = (blur[:, None] * blur[None, :] / 16).expand(3, 1, 3, 3).to(dev)

        def work(stop: threading.Event) -> str:
            self.wants_start = start.clone()
            x = start.to(dev).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr)
            with torch.no_grad():  # the layer's typical size: the TV weight means the same for any weights
                scale = float(net.extract(x, [target])[target].abs().mean()) + 1e-6
            done = 0
            for i in range(steps):
                if stop.is_set():
                    break
                opt.zero_grad()
                act = net.extract(x, [target])[target][0, k].mean()
                tv = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
                (-act / scale + tv_weight * tv).backward()
                opt.step()
                with torch.no_grad():
                    if (i + 1) % 5 == 0:
                        x.copy_(0.5 * x + 0.5 * F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), blur, groups=3))
                    x.clamp_(0, 1)
                done = i + 1
                if self._throttle.ready():
                    self.wants_view.value = _png(x.detach().cpu())
                    self.preview_updates += 1
            self.wants_image = x.detach().cpu()
            self.wants_view.value = _png(self.wants_image)
            self.preview_updates += 1
            with torch.no_grad():
                a = float(net.extract(x.detach(), [layer])[layer][0, k].mean())
            return f"What {layer} channel {k} wants: {done} of {steps} steps; its mean activation is now {a:.3g}."

        return self._start("maximise", work)

    def stop(self) -> None:
        """Ask the running job to end after its current step."""
        self._runner.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the job to end (at most `timeout` s). True if none is going any more."""
        return self._runner.wait(timeout)

    # -- saving --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike | None = None) -> Path:
        """A slide (PNG, 200 dpi) of the views and a JSON of the settings beside it; returns the PNG's path."""
        maps = self._maps_now()
        if maps is None or self._image is None:
            raise RuntimeError("nothing to save yet: load an image and a layer first.")
        if path is None:
            name = self._image_spec.partition(":")[2].replace(os.sep, "_")[:24] or "image"
            path = self.save_dir / f"{name}-{self._layer}-ch{self._channel}-{time.strftime('%Y%m%d-%H%M%S')}.png"
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise ValueError(f"save writes a PNG: give a path ending in .png, got {str(path)!r}.")
        path.parent.mkdir(parents=True, exist_ok=True)
        job = {"reconstruct": ("what this layer keeps", self.recon_image),
               "maximise": (f"what channel {self._channel} wants", self.wants_image)}.get(self.last_job or "")
        panels: list[tuple[str, Any]] = [
            ("image", np.asarray(to_pil(self._image))),
            (f"channel {self._channel}", _decode(self.channel_png)),
            ("Gram matrix, log10 |G|", _decode(self.gram_png)),
            (f"the {TOP} most active channels", _decode(self.montage_png)),
        ]
        if job is not None and job[1] is not None:
            panels.append((job[0], np.asarray(to_pil(job[1]))))
        fig = Figure(figsize=(3.2 * len(panels), 3.6), layout="constrained")
        for i, (title, arr) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), i + 1)
            ax.imshow(arr)
            ax.set_title(title, fontsize=10)
            ax.set_axis_off()
        c, h, w = maps.feats.shape
        fig.suptitle(f"{self._image_spec} | {self._layer} ({c}x{h}x{w}) | channel {self._channel}", fontsize=12)
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=200)
        s = self.settings()
        if self._image_spec == "tensor" or self._image_spec.startswith("upload:"):
            copy = path.with_name(f"{path.stem}.image.png")
            to_pil(self._image).save(copy)
            s["image"] = f"path:{copy.resolve()}"
        s["job"] = self.last_job if job is not None and job[1] is not None else None
        with atomic_write(path.with_suffix(".json"), "w") as f:
            json.dump(s, f, indent=2)
        return path

    def _save_clicked(self) -> None:
        try:
            p = self.save()
            self._note(f"Saved {p} and {p.with_suffix('.json').name}.")
        except Exception as e:
            self._note(f"Cannot save: {e}", error=True)


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(BytesIO(png)).convert("RGB"))


def _course_keys() -> list[str]:
    from nstlib import data

    return [i.key for i in data.list_images()]


__all__ = ["LayerExplorer"]

# Last, not at the top: nstlib.widgets imports this module at its end (so that
# `from nstlib.widgets import LayerExplorer` works), and either module may be imported first.
from nstlib.widgets import _LABEL, _extractor, _ImageChooser, _notice_html, _png, _status_html  # noqa: E402
