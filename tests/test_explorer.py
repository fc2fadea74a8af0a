"""The layer explorer (nstlib.widgets.explorer), driven from Python as a notebook user would drive it.

Seeded random VGG-16 weights, a bundled course image at 64 px, live jobs at 48 px and a few
steps: each test takes a second or a few. Every wait is bounded.
"""

from __future__ import annotations

import io
import json
import time

import pytest
import torch
from PIL import Image

from nstlib.vgg import layer_table
from nstlib.widgets import LayerExplorer
from panel_tools import WAIT, wait_until  # a helper module beside the tests, as browser_tools

WEIGHTS = "random:vgg16:0"


@pytest.fixture
def ex():
    e = LayerExplorer("chelsea", "relu2_1", size=64, weights=WEIGHTS, device="cpu", preview_every_s=0.0, job_size=48)
    yield e
    e.stop()
    assert e.wait(WAIT)


def channel_mean(net, image: torch.Tensor, layer: str, k: int) -> float:
    with torch.no_grad():
        return float(net.extract(image, [layer])[layer][0, k].mean())


def test_constructs_with_views_and_labels(ex):
    assert "nst-explorer" in ex.widget._dom_classes
    assert ex.widget._repr_mimebundle_() is not None
    assert ex.error is None and "relu2_1" in ex.message, ex.message
    assert ex.layer == "relu2_1" and ex.channel == 0
    h, w = ex._image.shape[-2:]
    assert max(h, w) == 64
    labels = dict((v, label) for label, v in ex.layer_dd.options)
    assert len(labels) == 31  # VGG-16: 13 conv + 13 relu + 5 pool
    rows = {r.name: r for r in layer_table("vgg16", (h, w))}
    for name in ("relu1_1", "relu2_1", "relu5_1"):
        c, lh, lw = rows[name].shape
        assert f"{c}x{lh}x{lw}" in labels[name] and f"RF {rows[name].receptive_field}px" in labels[name]
    assert "128x" in labels["relu2_1"] and "RF 10px" in labels["relu2_1"]
    assert ex.channel_slider.max == 127
    assert ex.last_update_s is not None and ex.last_update_s > 0
    for png in (ex.montage_png, ex.channel_png, ex.gram_png, ex.gram_row_png):
        assert Image.open(io.BytesIO(png)).format == "PNG"


def test_channel_change_redraws_channel_and_gram_row_only(ex):
    before = (ex.montage_png, ex.channel_png, ex.gram_png, ex.gram_row_png)
    ex.last_update_s = None
    k = ex.top_channels[0]
    assert k != 0
    assert ex.set_channel(k)
    assert ex.channel == k and ex.channel_slider.value == k
    assert ex.montage_png == before[0]
    assert ex.channel_png != before[1]
    assert ex.gram_png != before[2]  # the chosen row is boxed
    assert ex.gram_row_png != before[3]
    assert ex.last_update_s is not None
    # the slider drives it too
    ex.channel_slider.value = 3
    assert ex.channel == 3
    assert not ex.set_channel(128) and "0..127" in ex.message


def test_layer_change_redraws_everything_and_resets_the_channel(ex):
    ex.set_channel(5)
    before = (ex.montage_png, ex.channel_png, ex.gram_png, ex.gram_row_png)
    assert ex.set_layer("relu3_1")
    assert ex.layer == "relu3_1" and ex.channel == 0 and ex.channel_slider.value == 0
    assert ex.channel_slider.max == 255
    assert all(a != b for a, b in zip(before, (ex.montage_png, ex.channel_png, ex.gram_png, ex.gram_row_png)))
    ex.layer_dd.value = "relu1_1"  # the dropdown drives it too
    assert ex.layer == "relu1_1" and ex.channel_slider.max == 63
    assert not ex.set_layer("relu9_9") and "relu9_9" in ex.message


def test_features_are_cached_per_image_and_layer(ex, monkeypatch):
    calls = []
    real = ex._net.extract
    monkeypatch.setattr(ex._net, "extract", lambda *a, **k: calls.append(1) or real(*a, **k))
    ex.set_layer("relu3_1")
    ex.set_channel(4)
    ex.set_channel(7)
    ex.set_layer("relu2_1")  # computed by the fixture already
    assert len(calls) == 1


def test_reconstruct_runs_in_the_background(ex):
    before = ex.recon_view.value
    t = time.perf_counter()
    assert ex.reconstruct(steps=5)
    assert time.perf_counter() - t < 1.0, "reconstruct() must return at once: the work goes in a thread"
    assert ex.wait(WAIT)
    assert ex.error is None, ex.notice
    assert ex.preview_updates >= 2  # preview_every_s=0: a preview per step, and the result
    assert ex.recon_view.value != before
    assert ex.recon_image is not None and max(ex.recon_image.shape[-2:]) == 48
    assert "done after 5 of 5" in ex.notice


def test_stop_ends_a_long_run_and_a_second_job_is_refused(ex):
    assert ex.reconstruct(steps=10000)
    assert ex.running and not ex.stop_button.disabled and ex.recon_button.disabled
    assert not ex.maximise(steps=5)
    assert "already going" in ex.notice
    assert wait_until(lambda: ex.preview_updates >= 2)
    t = time.perf_counter()
    ex.stop()
    assert ex.wait(10)
    assert time.perf_counter() - t < 10
    assert "stopped" in ex.notice and "of 10000" in ex.notice
    assert ex.stop_button.disabled and not ex.recon_button.disabled


def test_maximise_raises_the_channels_activation(ex):
    k = ex.top_channels[0]
    ex.set_channel(k)
    before = ex.wants_view.value
    assert ex.maximise(steps=5)
    assert ex.wait(WAIT)
    assert ex.error is None, ex.notice
    assert ex.wants_view.value != before and ex.preview_updates >= 2
    start, end = ex.wants_start, ex.wants_image
    assert end.shape == start.shape == (1, 3, 48, 48)
    assert 0.0 <= float(end.min()) and float(end.max()) <= 1.0
    assert channel_mean(ex._net, end, "relu2_1", k) > channel_mean(ex._net, start, "relu2_1", k)


def test_save_writes_a_200_dpi_slide_and_its_settings(ex, tmp_path):
    ex.set_channel(9)
    assert ex.reconstruct(steps=2) and ex.wait(WAIT)
    p = ex.save(tmp_path / "slide.png")
    assert p == tmp_path / "slide.png" and p.exists()
    img = Image.open(p)
    assert img.format == "PNG"
    assert img.info["dpi"][0] == pytest.approx(200, abs=1)
    meta = json.loads(p.with_suffix(".json").read_text())
    assert meta["layer"] == "relu2_1" and meta["channel"] == 9
    assert meta["image"] == "course:chelsea" and meta["size"] == 64 and meta["weights"] == WEIGHTS
    assert meta["job"] == "reconstruct"
    with pytest.raises(ValueError, match="PNG"):
        ex.save(tmp_path / "slide.jpg")


def test_errors_become_messages(ex, tmp_path):
    montage = ex.montage_png
    assert not ex.set_image("path:/no/such/image.jpg")
    assert "Cannot load the image" in ex.message and "nst-status" in ex.status._dom_classes
    assert "/no/such/image.jpg" in ex.status.value
    assert ex.montage_png == montage  # the last good views stay
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    assert not ex.set_image(str(bad)) and "Cannot load the image" in ex.message
    # A strip 4 px high: too small for relu5_1 (needs 16 px), a message and a label say so.
    assert ex.set_image(torch.rand(1, 3, 4, 64))
    labels = dict((v, label) for label, v in ex.layer_dd.options)
    assert "too small" in labels["relu5_1"]
    assert not ex.set_layer("relu5_1")
    assert "too small" in ex.message
    assert ex.set_image("chelsea") and ex.set_layer("relu5_1")
