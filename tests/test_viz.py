"""nstlib.viz: every helper returns a Figure with the right axes, labels and scales; bad input fails clearly."""

from __future__ import annotations

import os
import stat

import matplotlib

matplotlib.use("Agg")  # noqa: E402  (the test command sets MPLBACKEND=Agg too)

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib import colors
from matplotlib.figure import Figure
from PIL import Image

from nstlib import viz
from nstlib.stylize import StyleResult


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def image_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


def rand_images(b: int, h: int = 8, w: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def history(steps: int = 10, batch: int = 2) -> dict[str, np.ndarray]:
    t = np.arange(steps + 1, dtype=float)[:, None]
    scale = np.arange(1, batch + 1, dtype=float)[None, :]
    return {
        "total": 100.0 * np.exp(-t / 3) * scale,
        "content:relu4_2": 5.0 * np.exp(-t / 5) * scale,
        "style:relu1_1": 1e3 * np.exp(-t / 2) * scale,
        "style:relu2_1": 1e5 * np.exp(-t) * scale,
    }


# -- show_images ----------------------------------------------------------------------------------

def test_show_images_expands_batches_and_sets_titles():
    imgs = [rand_images(1), rand_images(3)[0], rand_images(2, seed=1), Image.new("RGB", (12, 8), "red")]
    titles = [f"t{i}" for i in range(5)]
    fig = viz.show_images(imgs, titles=titles, ncols=4, suptitle="grid")
    assert isinstance(fig, Figure)
    axes = image_axes(fig)
    assert len(axes) == 5  # 1 + 1 + a batch of 2 + 1 PIL image; a 2 x 4 grid has 8 axes
    assert len(fig.axes) == 8
    assert [ax.get_title() for ax in axes] == titles
    assert fig._suptitle.get_text() == "grid"
    assert all(ax.get_xticks().size == 0 and ax.get_yticks().size == 0 for ax in fig.axes)
    assert fig.get_layout_engine() is not None  # constrained layout
    # the pixels shown are the tensor's, as H x W x 3
    np.testing.assert_allclose(axes[0].images[0].get_array(), imgs[0][0].permute(1, 2, 0).numpy(), atol=1e-6)


def test_show_images_row_and_column_labels_fig4_grid():
    rows, cols = ["conv1_1", "conv1_1..conv2_1"], ["1e-5", "1e-4", "1e-3"]
    fig = viz.show_images(rand_images(6), row_labels=rows, col_labels=cols, titles=list("abcdef"))
    axes = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == cols
    assert [ax.get_ylabel() for ax in axes[:, 0]] == rows
    # per-image titles move under the images when the column labels take the top
    assert [ax.get_xlabel() for ax in axes.flat] == list("abcdef")


def test_show_images_dict_titles_grayscale_and_style_result():
    res = StyleResult(image=rand_images(2), history=history(), settings={}, wall_time=0.0, steps_done=10)
    fig = viz.show_images({"mask": torch.rand(1, 8, 8), "result": res, "arr": np.zeros((4, 4, 3), np.uint8)})
    axes = image_axes(fig)
    assert [ax.get_title() for ax in axes] == ["mask", "result [0]", "result [1]", "arr"]
    assert axes[0].images[0].get_array().ndim == 2  # grayscale drawn as a 2-D map


def test_show_images_clips_out_of_range_with_a_warning():
    with pytest.warns(UserWarning, match="outside"):
        fig = viz.show_images(torch.full((3, 4, 4), 2.0))
    assert image_axes(fig)[0].images[0].get_array().max() == 1.0


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(2, 3), r"shape \(2, 3\).*expected a tensor \(3, H, W\)"),
        (torch.zeros(1, 4, 8, 8), r"shape \(1, 4, 8, 8\)"),
        (torch.zeros(0, 3, 8, 8), "no images"),
        (np.zeros((3, 8, 8)), r"array of shape \(3, 8, 8\)"),
        ([], "no images"),
    ],
)
def test_show_images_rejects_bad_shapes(bad, match):
    with pytest.raises(ValueError, match=match):
        viz.show_images(bad)


def test_show_images_rejects_bad_arguments():
    with pytest.raises(TypeError, match="expected a tensor"):
        viz.show_images(["not an image"])
    with pytest.raises(ValueError, match="3 images .* 2 titles"):
        viz.show_images(rand_images(3), titles=["a", "b"])
    with pytest.raises(TypeError, match="one title per image"):
        viz.show_images(rand_images(1), titles="a")
    with pytest.raises(ValueError, match="do not fit"):
        viz.show_images(rand_images(5), row_labels=["a", "b"], col_labels=["x", "y"])
    with pytest.raises(ValueError, match="ncols=3 but 2 col_labels"):
        viz.show_images(rand_images(2), ncols=3, col_labels=["x", "y"])
    with pytest.raises(ValueError, match="ncols"):
        viz.show_images(rand_images(2), ncols=0)


# -- feature maps and Grams -------------------------------------------------------------------------

def test_feature_montage_index_order_per_map():
    feats = torch.rand(1, 20, 6, 5, generator=torch.Generator().manual_seed(0))
    fig = viz.feature_montage(feats, n=10, ncols=4, title="relu1_1")
    axes = image_axes(fig)
    assert len(axes) == 10
    assert [ax.get_title() for ax in axes] == [f"ch {i}" for i in range(10)]
    assert fig._suptitle.get_text() == "relu1_1"
    assert "own min..max" in fig._supxlabel.get_text()
    # per-map scaling: each image's colour range is its own map's range
    lo, hi = axes[3].images[0].get_clim()
    assert lo == pytest.approx(float(feats[0, 3].min())) and hi == pytest.approx(float(feats[0, 3].max()))


def test_feature_montage_activation_order_shared_colorbar():
    feats = torch.zeros(8, 4, 4)
    for c, level in enumerate([0.1, 5.0, 0.0, 2.0, 7.0, 0.5, 0.2, 3.0]):
        feats[c] = level
    fig = viz.feature_montage(feats, n=3, order="activation", normalize="shared")
    axes = image_axes(fig)
    assert [ax.get_title() for ax in axes[:3]] == ["ch 4", "ch 1", "ch 7"]
    assert len(fig.axes) == 4  # three maps (a 1 x 3 grid) + the colorbar
    assert {ax.images[0].get_clim() for ax in axes[:3]} == {(3.0, 7.0)}
    assert "most active" in fig._suptitle.get_text()


def test_feature_montage_n_larger_than_channels_and_bad_input():
    assert len(image_axes(viz.feature_montage(torch.rand(1, 3, 4, 4), n=16))) == 3
    with pytest.raises(ValueError, match=r"features \(1, C, H, W\).*got shape \(4, 4\)"):
        viz.feature_montage(torch.rand(4, 4))
    with pytest.raises(ValueError, match="normalize"):
        viz.feature_montage(torch.rand(1, 3, 4, 4), normalize="global")
    with pytest.raises(ValueError, match="order"):
        viz.feature_montage(torch.rand(1, 3, 4, 4), order="random")
    with pytest.raises(IndexError, match="batch of 1"):
        viz.feature_montage(torch.rand(1, 3, 4, 4), index=1)


def test_gram_heatmap_labels_colorbar_and_crop():
    f = torch.rand(1, 100, 36)
    gram = f @ f.transpose(1, 2)
    fig = viz.gram_heatmap(gram, max_channels=32)
    ax = image_axes(fig)[0]
    assert ax.get_xlabel() == "channel j" and ax.get_ylabel() == "channel i"
    assert "first 32 of 100" in ax.get_title()
    assert ax.images[0].get_array().shape == (32, 32)
    assert len(fig.axes) == 2  # heatmap + colorbar


def test_gram_heatmap_log_scales():
    pos = torch.rand(5, 5) + 0.1
    norm = image_axes(viz.gram_heatmap(pos, log=True, title="G"))[0].images[0].norm
    assert isinstance(norm, colors.LogNorm)
    signed = torch.randn(5, 5)
    norm = image_axes(viz.gram_heatmap(signed, log=True))[0].images[0].norm
    assert isinstance(norm, colors.SymLogNorm) and norm.vmin == -norm.vmax
    # a signed matrix without log: diverging colours centred on 0
    im = image_axes(viz.gram_heatmap(signed))[0].images[0]
    assert im.norm.vmin == -im.norm.vmax and im.get_cmap().name == "RdBu_r"


def test_gram_heatmap_into_given_axes_and_bad_input():
    fig, (a, b) = plt.subplots(1, 2)
    assert viz.gram_heatmap(torch.eye(4), ax=b) is fig
    assert b.images and not a.images
    with pytest.raises(ValueError, match="square"):
        viz.gram_heatmap(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"\(C, C\).*got shape \(2, 2, 3, 3\)"):
        viz.gram_heatmap(torch.zeros(2, 2, 3, 3))
    with pytest.raises(ValueError, match="no finite"):
        viz.gram_heatmap(torch.full((3, 3), float("nan")))


# -- losses and powers -----------------------------------------------------------------------------

def test_plot_losses_parts_log_scale_and_labels():
    h = history()
    fig = viz.plot_losses(h)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "loss"
    assert ax.get_title() == "losses"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == list(h)
    line = ax.get_lines()[3]
    np.testing.assert_allclose(line.get_ydata(), h["style:relu2_1"][:, 0])
    np.testing.assert_array_equal(line.get_xdata(), np.arange(11))


def test_plot_losses_normalized_batch_item_and_style_result():
    h = history()
    res = StyleResult(image=rand_images(2), history=h, settings={}, wall_time=0.0, steps_done=10)
    fig = viz.plot_losses(res, normalize=True, index=1, logy=False, title="Fig. 3")
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear" and ax.get_title() == "Fig. 3"
    assert ax.get_ylabel() == "loss / loss at step 0"
    for line, name in zip(ax.get_lines(), h):
        np.testing.assert_allclose(line.get_ydata(), h[name][:, 1] / h[name][0, 1])


def test_plot_losses_overlay_runs_and_select_parts():
    fig, ax = plt.subplots()
    viz.plot_losses(history(), parts=False, ax=ax, label="lbfgs")
    out = viz.plot_losses(history(), parts=["total", "style:relu1_1"], ax=ax, label="adam")
    assert out is fig
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lbfgs: total", "adam: total", "adam: style:relu1_1"]


def test_plot_losses_skips_curves_that_start_at_zero():
    h = history(batch=1)
    h["content:relu4_2"][0] = 0.0  # a run started from the content image
    with pytest.warns(UserWarning, match="content:relu4_2"):
        fig = viz.plot_losses(h, normalize=True)
    assert len(fig.axes[0].get_lines()) == 3


def test_plot_losses_bad_input():
    with pytest.raises(ValueError, match="no curve named 'style:relu9_9'.*'total'"):
        viz.plot_losses(history(), parts=["style:relu9_9"])
    with pytest.raises(IndexError, match="batch of 2"):
        viz.plot_losses(history(), index=2)
    with pytest.raises(TypeError, match="StyleResult.history"):
        viz.plot_losses([1.0, 2.0])
    with pytest.raises(ValueError, match=r"curve 'total' must be an array"):
        viz.plot_losses({"total": np.zeros((2, 2, 2))})


def test_layer_power_bar_single_and_grouped():
    powers = {"relu1_2": 1.0, "relu2_2": 245.9, "relu3_4": torch.tensor(1317.6), "relu4_4": 381620.0, "relu5_4": 77.33}
    fig = viz.layer_power_bar(powers)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "layer" and ax.get_ylabel() == "mean output power"
    assert ax.get_title() == "layer output power"
    assert [t.get_text() for t in ax.get_xticklabels()] == list(powers)
    assert [p.get_height() for p in ax.patches] == pytest.approx([float(v) for v in powers.values()])
    grouped = viz.layer_power_bar({"starry": {"a": 1.0, "b": 2.0}, "scream": {"a": 3.0, "b": 4.0}}, logy=False, title="T")
    ax = grouped.axes[0]
    assert len(ax.patches) == 4 and ax.get_yscale() == "linear" and ax.get_title() == "T"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["starry", "scream"]


def test_layer_power_bar_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        viz.layer_power_bar({})
    with pytest.raises(ValueError, match=">= 0"):
        viz.layer_power_bar({"relu1_1": -1.0})
    with pytest.raises(ValueError, match="finite"):
        viz.layer_power_bar({"relu1_1": float("nan")})
    with pytest.raises(TypeError, match="must be a number"):
        viz.layer_power_bar({"relu1_1": "big"})


# -- saving and notebook display ----------------------------------------------------------------------

def test_save_figure_writes_png_with_dpi_scaled_size(tmp_path):
    fig = viz.plot_losses(history())
    w_in, h_in = fig.get_size_inches()
    path = viz.save_figure(fig, tmp_path / "losses.png", dpi=50)
    assert path == tmp_path / "losses.png"
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (round(w_in * 50), round(h_in * 50))
    assert os.listdir(tmp_path) == ["losses.png"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    viz.save_figure(fig, path, dpi=20)  # overwrites in place
    with Image.open(path) as img:
        assert img.size == (round(w_in * 20), round(h_in * 20))


def test_save_figure_errors(tmp_path):
    fig = viz.show_images(rand_images(1))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        viz.save_figure(fig, tmp_path / "missing" / "f.png")
    with pytest.raises(ValueError, match=r"unknown suffix '\.gif'"):
        viz.save_figure(fig, tmp_path / "f.gif")
    with pytest.raises(TypeError, match="matplotlib Figure"):
        viz.save_figure(rand_images(1), tmp_path / "f.png")
    with pytest.raises(ValueError, match="dpi"):
        viz.save_figure(fig, tmp_path / "f.png", dpi=0)
    assert os.listdir(tmp_path) == []


def test_figures_display_in_notebooks_once_without_pyplot():
    fig = viz.show_images(rand_images(1))
    png = fig._repr_png_()
    assert png.startswith(b"\x89PNG")
    assert plt.get_fignums() == []  # not registered with pyplot: the inline backend will not show it again


def test_show_images_rows_take_their_own_height():
    # A landscape row above a portrait row: no empty band between them (each row as tall as its images).
    land, port = torch.rand(1, 3, 60, 90), torch.rand(1, 3, 100, 70)
    fig = viz.show_images([land, land, port, port], ncols=2)
    fig.canvas.draw()
    top_box, bottom_box = fig.axes[0].get_window_extent(), fig.axes[2].get_window_extent()
    gap_inches = (top_box.y0 - bottom_box.y1) / fig.dpi
    assert 0 <= gap_inches < 0.6, gap_inches
    assert abs(top_box.height / top_box.width - 60 / 90) < 0.05


def test_pipeline_diagram_draws_the_three_rows_with_or_without_images():
    import matplotlib
    from nstlib import diagrams
    for images in ((None, None, None), (torch.rand(1, 3, 24, 32), torch.rand(1, 3, 30, 30), torch.rand(1, 3, 24, 32))):
        fig = diagrams.pipeline(*images)
        texts = " ".join(t.get_text() for t in fig.axes[0].texts)
        for name in ("frozen VGG", "relu4_2", "relu1_1", "notebook 2", "notebook 3", "loss.backward()", "optimizer.step()"):
            assert name in texts
        assert len(fig.axes[0].images) == (0 if images[0] is None else 3)
        matplotlib.pyplot.close(fig)


def test_gram_heatmap_limits_share_one_colour_scale():
    from nstlib import viz as v
    a, b = torch.rand(8, 8) + 0.1, 10 * torch.rand(8, 8) + 0.1
    limits = (min(a.min(), b.min()).item(), max(a.max(), b.max()).item())
    for g in (a, b):
        fig = v.gram_heatmap(g, log=True, limits=limits)
        norm = fig.axes[0].images[0].norm
        assert (norm.vmin, norm.vmax) == pytest.approx(limits)
        plt.close(fig)
    for bad in ((1.0, 1.0), (2.0, 1.0), (0.0, float("nan")), (1.0,)):
        with pytest.raises(ValueError, match="limits must be"):
            v.gram_heatmap(a, limits=bad)
