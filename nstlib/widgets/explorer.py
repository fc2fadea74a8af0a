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

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nstlib._io import atomic_group, atomic_write, ensure_folder
from nstlib.devices import pick_device
from nstlib.images import load_image, save_image, to_pil
from nstlib.runner import RunController, Throttle
from nstlib.vgg import VGGFeatures
from nstlib.weights import ENV_VAR
from nstlib.widgets.common import _course_keys, _extractor
from nstlib.widgets.explorer_jobs import ExplorerJobs
from nstlib.widgets.layer_views import TOP, LayerMaps, channel_overlay, decode, gram_boxed, gram_row, slide


class LayerExplorer(ExplorerJobs):
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
        self.error: BaseException | None = None
        self.recon_image: torch.Tensor | None = None
        self.wants_image: torch.Tensor | None = None
        self.wants_start: torch.Tensor | None = None
        self.last_job: str | None = None  # "reconstruct" | "maximise": the one whose image Save shows
        self._net: VGGFeatures | None = None
        self._image: torch.Tensor | None = None
        self._image_spec = ""
        self._version = 0  # +1 per image: the key of the feature cache
        self._cache: dict[tuple[int, str], LayerMaps] = {}
        self._quiet = False  # True while the code itself sets controls

        super().__init__(image)
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
    def top_channels(self) -> list[int]:
        """The layer's channels by mean activation, most active first ([] before the first maps)."""
        maps = self._maps_now()
        return list(maps.order) if maps is not None else []

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
    def _maps_now(self) -> LayerMaps | None:
        return self._cache.get((self._version, self._layer))

    def _maps(self) -> LayerMaps:
        key = (self._version, self._layer)
        if key not in self._cache:
            assert self._net is not None and self._image is not None
            dev = next(self._net.parameters()).device
            with torch.no_grad():
                f = self._net.extract(self._image.to(dev), [self._layer])[self._layer][0]
            self._cache[key] = LayerMaps(f.float().cpu())
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
        self.channel_view.value = channel_overlay(self._image, maps, self._channel)
        self.gram_view.value = gram_boxed(maps, self._channel)
        self.row_view.value = gram_row(maps, self._channel)
        self.last_update_s = time.perf_counter() - t0
        k = self._channel
        rank = maps.order.index(k) + 1
        _, h, w = maps.feats.shape
        self._set_message(f"{self._image_spec}: {self._layer} ({c}x{h}x{w}), channel {k}: mean activation "
                          f"{maps.means[k]:.3g}, rank {rank} of {c}. Updated in {self.last_update_s * 1000:.0f} ms.")
        return True

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
        ensure_folder(path.parent, path)
        job = {"reconstruct": ("what this layer keeps", self.recon_image),
               "maximise": (f"what channel {self._channel} wants", self.wants_image)}.get(self.last_job or "")
        panels: list[tuple[str, Any]] = [
            ("image", np.asarray(to_pil(self._image))),
            (f"channel {self._channel}", decode(self.channel_png)),
            ("Gram matrix, log10 |G|", decode(self.gram_png)),
            (f"the {TOP} most active channels", decode(self.montage_png)),
        ]
        if job is not None and job[1] is not None:
            panels.append((job[0], np.asarray(to_pil(job[1]))))
        c, h, w = maps.feats.shape
        fig = slide(panels, f"{self._image_spec} | {self._layer} ({c}x{h}x{w}) | channel {self._channel}")
        s = self.settings()
        with atomic_group():  # the slide, the image copy and the JSON: all of them or none
            with atomic_write(path) as f:
                fig.savefig(f, format="png", dpi=200)
            if self._image_spec == "tensor" or self._image_spec.startswith("upload:"):
                copy = path.with_name(f"{path.stem}.image.png")
                save_image(self._image, copy)
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


__all__ = ["LayerExplorer"]
