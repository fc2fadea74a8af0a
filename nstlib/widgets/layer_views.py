"""The layer explorer's pictures and widgets: what one (image, layer) gives (`LayerMaps`), the
views drawn from it, the widgets and their layout (`ExplorerView`), and activation maximisation's
loop. What the explorer does with them is `nstlib.widgets.explorer`'s.
"""

from __future__ import annotations

import html
import threading
from io import BytesIO
from typing import Any, Callable

import ipywidgets as W
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from nstlib.losses import gram_matrix
from nstlib.vgg import VGGFeatures
from nstlib.widgets.common import _LABEL, _course_keys, _ImageChooser, _notice_html, _status_html

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


class LayerMaps:
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


def channel_overlay(image: torch.Tensor, maps: LayerMaps, channel: int) -> bytes:
    """The image with the channel's map over it (a heat map, strong where the channel fires)."""
    img = image
    h, w = img.shape[-2:]
    scale = _VIEW / max(h, w)
    hh, ww = max(1, round(h * scale)), max(1, round(w * scale))
    base = F.interpolate(img.float(), size=(hh, ww), mode="bilinear", align_corners=False, antialias=True)[0]
    m = maps.feats[channel][None, None]
    m = F.interpolate(m, size=(hh, ww), mode="bilinear", align_corners=False)[0, 0].numpy()
    u = _unit(m)
    heat = colormaps["hot"](u)[..., :3]
    alpha = 0.7 * u[..., None]  # strong where the channel fires, the photo where it does not
    out = base.permute(1, 2, 0).clamp(0, 1).numpy() * (1 - alpha) + heat * alpha
    return _png_bytes(Image.fromarray((out * 255).astype(np.uint8)))


def gram_boxed(maps: LayerMaps, channel: int) -> bytes:
    """The log Gram matrix with the channel's row boxed in red."""
    c = maps.gram.shape[0]
    px = max(1, _VIEW // c)
    img = Image.fromarray(maps.gram_rgb).resize((c * px, c * px), Image.NEAREST)
    d = ImageDraw.Draw(img)
    k = channel
    d.rectangle((0, k * px - 1, c * px - 1, (k + 1) * px), outline=(255, 40, 40), width=max(1, px // 2 or 1))
    return _png_bytes(img)


def gram_row(maps: LayerMaps, channel: int) -> bytes:
    """The channel's row of the Gram matrix, its diagonal entry marked."""
    k = channel
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


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(BytesIO(png)).convert("RGB"))


def slide(panels: list[tuple[str, np.ndarray]], title: str) -> Figure:
    """A row of titled pictures under one title (the explorer's Save)."""
    fig = Figure(figsize=(3.2 * len(panels), 3.6), layout="constrained")
    for i, (name, arr) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(arr)
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=12)
    return fig


def maximise_channel(net: VGGFeatures, layer: str, k: int, start: torch.Tensor, steps: int, *, lr: float,
                     tv_weight: float, stop: threading.Event,
                     preview: Callable[[torch.Tensor], None]) -> tuple[torch.Tensor, int]:
    """Raise channel k's mean activation at `layer` from `start` with Adam (see LayerExplorer.maximise).

    Returns (the image on the CPU, the steps done); `preview(image)` is called after every step.
    """
    target = "conv" + layer[4:] if layer.startswith("relu") else layer
    dev = next(net.parameters()).device
    blur = torch.tensor([1.0, 2.0, 1.0])
    blur = (blur[:, None] * blur[None, :] / 16).expand(3, 1, 3, 3).to(dev)
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
        preview(x.detach())
    return x.detach().cpu(), done


class ExplorerView:
    """The explorer's widgets: `controls` (left), `views` (right), `widget` (both); the status
    line (`message`) and the note (`notice`)."""

    def __init__(self, image: Any) -> None:
        self.message = self.notice = ""
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
        self._lay_out()

    def _lay_out(self) -> None:
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

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    def _set_message(self, text: str, error: bool = False) -> None:
        self.message = text
        self.status.value = _status_html(text, error)

    def _note(self, text: str, error: bool = False) -> None:
        self.notice = text
        self.notice_box.value = _notice_html(text, error, width="440px")

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
