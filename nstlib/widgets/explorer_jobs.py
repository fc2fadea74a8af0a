"""The layer explorer's two live jobs, one at a time in the background: a content reconstruction
from faint noise ("what this layer keeps") and an activation maximisation of one channel ("what
this channel wants"). `nstlib.widgets.explorer.LayerExplorer` is built on this class.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from nstlib.stylize import StepInfo, stylize
from nstlib.widgets.common import _png
from nstlib.widgets.layer_views import ExplorerView, maximise_channel


class ExplorerJobs(ExplorerView):
    """reconstruct(steps), maximise(steps), stop(), wait(timeout), running. Uses the explorer's
    network (_net), image (_image), layer (_layer), channel (_channel), job_size, device, runner
    (_runner) and preview throttle (_throttle)."""

    @property
    def running(self) -> bool:
        return self._runner.running

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
        g = torch.Generator().manual_seed(seed)
        start = (0.5 + 0.02 * torch.randn(1, 3, self.job_size, self.job_size, generator=g)).clamp(0, 1)

        def preview(x: torch.Tensor) -> None:
            if self._throttle.ready():
                self.wants_view.value = _png(x.cpu())
                self.preview_updates += 1

        def work(stop: threading.Event) -> str:
            self.wants_start = start.clone()
            self.wants_image, done = maximise_channel(net, layer, k, start, steps, lr=lr, tv_weight=tv_weight,
                                                      stop=stop, preview=preview)
            self.wants_view.value = _png(self.wants_image)
            self.preview_updates += 1
            with torch.no_grad():
                x = self.wants_image.to(next(net.parameters()).device)
                a = float(net.extract(x, [layer])[layer][0, k].mean())
            return f"What {layer} channel {k} wants: {done} of {steps} steps; its mean activation is now {a:.3g}."

        return self._start("maximise", work)

    def stop(self) -> None:
        """Ask the running job to end after its current step."""
        self._runner.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the job to end (at most `timeout` s). True if none is going any more."""
        return self._runner.wait(timeout)
