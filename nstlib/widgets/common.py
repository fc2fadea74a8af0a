"""What every panel of `nstlib.widgets` shares: the image chooser, the status and notice markup,
PNG previews, the label width and rows, and one network per (weights, pooling, device) for the
whole process, loaded once and warmed up in the background.
"""

from __future__ import annotations

import html
import threading
from io import BytesIO

import ipywidgets as W
import torch
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from nstlib import data, paper_scale
from nstlib.images import load_image, to_pil
from nstlib.runner import RunController
from nstlib.stylize import stylize
from nstlib.vgg import VGGFeatures, load_vgg, style_layer_preset

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
    first preview: building a torch optimizer (Adam) imports torch._dynamo (1-3 s on a laptop),
    matplotlib loads its fonts, the first forward and backward passes set up their kernels, and
    the α/β scale of the default layer set is calibrated (a 256 px pair: about 1 s on 2 cores).
    A run started meanwhile does not wait for the import: it loads its images and targets
    meanwhile; one started during the calibration waits for its result (it needs the same)."""
    try:
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        Figure(figsize=(1, 1)).savefig(BytesIO(), format="png")
        if not RunController.started_any.is_set():  # else it would only compete with that run
            net = _extractor(weights, pooling, device)
            img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
            stylize(img, img, extractor=net, device=device, steps=1, progress=False)
            paper_scale.scale(net, style_layer_preset("gatys", net.arch))
    except Exception:  # a real run reports any problem in the panel
        pass


def _start_warm_up(weights: str, pooling: str, device: str) -> None:
    global _warm_thread
    with _nets_lock:
        if _warm_thread is None:
            _warm_thread = threading.Thread(target=_warm_up, args=(weights, pooling, device), daemon=True,
                                            name="nstlib-warm-up")
            _warm_thread.start()


def wait_for_warm_up(timeout: float | None = None) -> bool:
    """Wait for the background warm-up of the first panel (at most `timeout` s); True when it is over.

    For measurements: a run started during the warm-up shares the processor with it.
    """
    t = _warm_thread
    if t is not None:
        t.join(timeout)
    return t is None or not t.is_alive()


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


def _course_keys() -> list[str]:
    return [i.key for i in data.list_images()]


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
