"""nstlib.weights and nstlib.vgg: weight sources, layer names, the extractor, normalization."""

from __future__ import annotations

import functools
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn

from nstlib import vgg
from nstlib import weights as W
from nstlib.vgg import VGGFeatures, layer_names, layer_table, load_vgg, normalize_network

from conftest import smooth_image

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


# -- weights settings ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, kind, arch, seed, path, convention",
    [
        ("random", "random", "vgg19", 0, None, "torchvision"),
        ("random:7", "random", "vgg19", 7, None, "torchvision"),
        ("random:vgg16", "random", "vgg16", 0, None, "torchvision"),
        ("random:vgg16:3", "random", "vgg16", 3, None, "torchvision"),
        ("torchvision", "torchvision", "vgg19", 0, None, "torchvision"),
        ("torchvision:vgg16", "torchvision", "vgg16", 0, None, "torchvision"),
        ("caffe:/x.pth", "file", None, 0, "/x.pth", "caffe"),
        ("vgg19:torchvision:/x.pth", "file", "vgg19", 0, "/x.pth", "torchvision"),
        ("torchvision:vgg16:/x.pth", "file", "vgg16", 0, "/x.pth", "torchvision"),
        ("/data/vgg16.pth", "file", None, 0, "/data/vgg16.pth", None),
        ("  random:vgg16:3 ", "random", "vgg16", 3, None, "torchvision"),
    ],
)
def test_parse_spec(text, kind, arch, seed, path, convention):
    spec = W.parse_spec(text)
    assert spec.kind == kind
    assert spec.arch == arch
    assert spec.convention == convention
    if kind == "random":
        assert spec.seed == seed
    assert spec.path == (Path(path) if path else None)


def test_parse_spec_home_is_expanded():
    assert W.parse_spec("caffe:~/w.pth").path == Path("~/w.pth").expanduser()


@pytest.mark.parametrize("text", ["", "   ", "random:abc", "random:vgg16:1:x"])
def test_parse_spec_bad(text):
    with pytest.raises(ValueError, match="random|empty"):
        W.parse_spec(text)


def test_resolve_default_env_and_argument(monkeypatch):
    monkeypatch.delenv(W.ENV_VAR, raising=False)
    spec = W.resolve(None)
    assert (spec.kind, spec.arch, spec.origin) == ("torchvision", "vgg19", "default")
    monkeypatch.setenv(W.ENV_VAR, "random:vgg16:5")
    spec = W.resolve(None)
    assert (spec.kind, spec.arch, spec.seed) == ("random", "vgg16", 5)
    assert W.ENV_VAR in spec.origin
    assert W.resolve("random:vgg19:1").arch == "vgg19"  # the argument wins over the environment
    with pytest.raises(TypeError, match="weights must be"):
        W.resolve(3.5)


def test_load_vgg_uses_env(monkeypatch):
    monkeypatch.setenv(W.ENV_VAR, "random:vgg16:5")
    net = load_vgg()
    assert net.arch == "vgg16"
    assert "seed 5" in net.describe() and W.ENV_VAR in net.describe()
    assert torch.equal(net.features[0].weight, W.random_state_dict("vgg16", 5)["0.weight"])


def test_load_vgg_argument_wins_over_env(monkeypatch, tmp_path):
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "missing.pth"))
    net = load_vgg("random:vgg16:1")  # would raise if the env setting were used
    assert net.arch == "vgg16"


def test_random_weights_reproducible_and_seeded():
    a, b, c = W.random_state_dict("vgg16", 0), W.random_state_dict("vgg16", 0), W.random_state_dict("vgg16", 1)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])
    assert not torch.equal(a["28.weight"], c["28.weight"])
    # He init: std of conv weights sqrt(2 / (C_out * 9))
    assert abs(float(a["28.weight"].std()) - (2 / (512 * 9)) ** 0.5) < 1e-3


def test_random_weights_describe(random_vgg16):
    text = random_vgg16.describe()
    assert "RANDOM" in text and "NOT pretrained" in text
    assert "VGG-16" in text
    assert random_vgg16.pretrained is False
    assert "RANDOM" in repr(random_vgg16)


def test_expected_shapes():
    shapes = W.expected_shapes("vgg19")
    assert len(shapes) == 32  # 16 convs, weight + bias
    assert shapes["0.weight"] == (64, 3, 3, 3)
    assert shapes["34.weight"] == (512, 512, 3, 3)
    assert len(W.expected_shapes("vgg16")) == 26
    with pytest.raises(ValueError, match="unknown architecture"):
        W.expected_shapes("resnet50")


# -- weights files ---------------------------------------------------------------------------

def _layout(state: dict[str, torch.Tensor], layout: str, arch: str = "vgg16") -> dict[str, torch.Tensor]:
    """Rewrite a 'N.weight' state dict into another common layout."""
    if layout == "plain":
        return dict(state)
    if layout == "features":
        out = {f"features.{k}": v for k, v in state.items()}
        out["classifier.0.weight"] = torch.zeros(4, 8)  # a full VGG file: the classifier is ignored
        out["classifier.0.bias"] = torch.zeros(4)
        return out
    if layout == "module":
        return {f"module.features.{k}": v for k, v in state.items()}
    if layout == "named":
        idx_to_name = {f"{i}": n for (i, _), n in zip(W._conv_indices(arch), W._conv_names(arch))}
        return {f"{idx_to_name[k.split('.')[0]]}.{k.split('.')[1]}": v for k, v in state.items()}
    if layout == "wrapped":
        return {"state_dict": dict(state), "epoch": 3}
    raise AssertionError(layout)


@pytest.fixture(scope="module")
def vgg16_state() -> dict[str, torch.Tensor]:
    return W.random_state_dict("vgg16", 3)


@pytest.mark.parametrize("layout", ["plain", "features", "module", "named", "wrapped"])
def test_weights_file_round_trip(tmp_path, vgg16_state, layout):
    path = tmp_path / "my-vgg.pth"
    torch.save(_layout(vgg16_state, layout), path)
    net = load_vgg(str(path))
    assert net.arch == "vgg16"  # read off the number of convolutions
    assert net.pretrained and net.convention == "torchvision"
    assert str(path) in net.describe()
    for k, v in vgg16_state.items():
        assert torch.equal(net.features.state_dict()[k], v), k


def test_weights_file_convention(tmp_path, vgg16_state):
    plain = tmp_path / "vgg.pth"
    caffe_named = tmp_path / "vgg16-caffe.pth"
    torch.save(vgg16_state, plain)
    torch.save(vgg16_state, caffe_named)
    assert load_vgg(str(plain)).convention == "torchvision"
    assert load_vgg(f"caffe:{plain}").convention == "caffe"
    inferred = load_vgg(str(caffe_named))
    assert inferred.convention == "caffe" and "inferred from the file name" in inferred.describe()
    assert load_vgg(f"torchvision:{caffe_named}").convention == "torchvision"  # explicit wins
    assert load_vgg(plain).arch == "vgg16"  # a Path object works too


def test_weights_file_wrong_arch_prefix(tmp_path, vgg16_state):
    path = tmp_path / "vgg.pth"
    torch.save(vgg16_state, path)
    with pytest.raises(ValueError, match="does not match vgg19"):
        load_vgg(f"vgg19:{path}")


@pytest.mark.parametrize(
    "key, prefix, pattern",
    [
        ("28.bias", "", r"missing keys: 28\.bias"),
        # A file that lost one convolution weight should still name what is missing, not only
        # say that 12 convolutions are neither VGG-16 nor VGG-19.
        ("28.weight", "", r"28\.weight"),
        ("28.weight", "vgg16:", r"missing keys: 28\.weight"),
    ],
)
def test_weights_file_missing_key_is_named(tmp_path, vgg16_state, key, prefix, pattern):
    state = dict(vgg16_state)
    del state[key]
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=pattern):
        load_vgg(f"{prefix}{path}")


def test_weights_file_mismatched_shape_is_named(tmp_path, vgg16_state):
    state = dict(vgg16_state)
    state["2.weight"] = torch.zeros(64, 32, 3, 3)
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"mismatched shapes: 2\.weight: \(64, 32, 3, 3\) \(expected \(64, 64, 3, 3\)\)"):
        load_vgg(str(path))


def test_weights_file_unexpected_key_is_named(tmp_path, vgg16_state):
    state = dict(vgg16_state)
    state["features.99.running_mean"] = torch.zeros(3)
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"unexpected keys: features\.99\.running_mean"):
        load_vgg(str(path))


def test_weights_file_not_vgg(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="VGG-16 has 13 and VGG-19 has 16"):
        load_vgg(str(path))


def test_weights_file_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="expected a state dict"):
        load_vgg(str(path))


def test_weights_file_not_torch(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(ValueError, match="not a PyTorch weights file"):
        load_vgg(str(path))


def test_weights_file_missing(tmp_path, monkeypatch):
    monkeypatch.delenv(W.ENV_VAR, raising=False)
    path = tmp_path / "nowhere.pth"
    with pytest.raises(W.WeightsUnavailableError, match="no weights file") as err:
        load_vgg(f"caffe:{path}")
    assert str(path) in str(err.value) and W.ENV_VAR in str(err.value)
    monkeypatch.setenv(W.ENV_VAR, str(path))
    with pytest.raises(W.WeightsUnavailableError, match=r"\$NSTLIB_WEIGHTS"):  # says where it came from
        load_vgg()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No cached torchvision weights and no internet."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(W.ENV_VAR, raising=False)
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return calls


@pytest.mark.parametrize("setting, arch", [(None, "vgg19"), ("torchvision", "vgg19"), ("torchvision:vgg16", "vgg16")])
def test_offline_torchvision_is_a_clear_error(offline, setting, arch):
    with pytest.raises(W.WeightsUnavailableError) as err:
        load_vgg(setting)  # never a silent fall back to random weights
    msg = str(err.value)
    assert offline, "the download was not even tried"
    assert arch in msg and "URLError" in msg
    assert "How to get them" in msg and "hub/checkpoints" in msg and f"{W.ENV_VAR}=caffe:" in msg
    assert f"{W.ENV_VAR}=random" in msg  # the smoke-run escape hatch is named, not taken


# -- layer names and the layer table ---------------------------------------------------------------

def test_layer_names_vgg19():
    names = layer_names("vgg19")
    assert len(names) == 37
    assert sum(n.startswith("conv") for n in names) == 16
    assert sum(n.startswith("relu") for n in names) == 16
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names[-1] == "pool5" and "relu3_4" in names and "conv5_4" in names


def test_layer_names_vgg16_match_torchvision_indices(random_vgg16):
    names = layer_names("vgg16")
    assert len(names) == 31 and "relu3_4" not in names
    assert len(random_vgg16.features) == 31
    for name, module in zip(names, random_vgg16.features):
        kind = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.AvgPool2d}[name[:4]]
        assert isinstance(module, kind), name


def test_gatys_and_choi_kim_layers_exist():
    for arch in ("vgg16", "vgg19"):
        names = layer_names(arch)
        assert set(vgg.GATYS_STYLE_LAYERS + vgg.GATYS_CONTENT_LAYERS) <= set(names)
        assert set(vgg.choi_kim_style_layers(arch)) <= set(names)
    assert vgg.choi_kim_style_layers("vgg19") == ("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4")
    assert vgg.choi_kim_style_layers("vgg16") == ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def test_unknown_layer_message(random_vgg16):
    with pytest.raises(ValueError) as err:
        random_vgg16.check_layers(["relu1_1", "relu3_4"])
    msg = str(err.value)
    assert "'relu3_4' is not a layer of vgg16" in msg
    assert "Block 3" in msg and "relu3_1 .. relu3_3" in msg
    assert "Did you mean" in msg and "relu3_3" in msg
    with pytest.raises(ValueError, match="Did you mean.*relu4_2"):
        random_vgg16.extract(torch.rand(1, 3, 32, 32), ["reul4_2"])


def test_layer_table_receptive_fields_and_strides():
    rows = {r.name: r for r in layer_table("vgg19")}
    assert [rows[n].receptive_field for n in ("conv1_1", "relu1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2")] == [3, 3, 5, 6, 10, 14, 16]
    assert rows["conv3_1"].receptive_field == 24
    assert rows["relu5_1"].stride == 16 and rows["pool5"].stride == 32
    assert rows["conv1_1"].stride == 1 and rows["pool1"].stride == 2
    assert rows["relu5_1"].channels == 512 and rows["relu2_1"].channels == 128
    # the well-known receptive fields at pool5: 212 px (VGG-16) and 268 px (VGG-19)
    assert rows["relu5_4"].receptive_field == 252
    assert rows["pool5"].receptive_field == 268
    assert {r.name: r.receptive_field for r in layer_table("vgg16")}["pool5"] == 212


@pytest.mark.parametrize("arch, hw", [("vgg16", (64, 48)), ("vgg19", (50, 37))])
def test_layer_table_shapes_match_extract(random_vgg16, random_vgg19, arch, hw):
    net = random_vgg16 if arch == "vgg16" else random_vgg19
    table = net.layer_table(hw)
    feats = net.extract(torch.rand(1, 3, *hw), layer_names(arch)[:-1])  # pool5 is 1x1 / 0x1
    for row in table[:-1]:
        assert (1, *row.shape) == tuple(feats[row.name].shape), row.name
    rows = {r.name: r for r in table}
    assert rows["relu1_1"].shape == (64, *hw)
    assert rows["relu5_1"].shape == (512, hw[0] // 16, hw[1] // 16)


# -- the extractor -------------------------------------------------------------------------------

def test_extract_shapes(random_vgg16):
    feats = random_vgg16.extract(torch.rand(1, 3, 64, 64), ["relu1_1", "relu5_1", "relu4_2", "pool2"])
    assert set(feats) == {"relu1_1", "relu5_1", "relu4_2", "pool2"}
    assert feats["relu1_1"].shape == (1, 64, 64, 64)
    assert feats["pool2"].shape == (1, 128, 16, 16)
    assert feats["relu4_2"].shape == (1, 512, 8, 8)
    assert feats["relu5_1"].shape == (1, 512, 4, 4)
    assert random_vgg16.extract(torch.rand(2, 3, 16, 16), ["relu5_1"])["relu5_1"].shape == (2, 512, 1, 1)
    assert random_vgg16.extract(torch.rand(1, 3, 16, 16), []) == {}


def test_extract_runs_only_up_to_the_deepest_layer(random_vgg16):
    names = random_vgg16.names
    last = names.index("relu3_1")
    called: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: called.append(n)) for n, m in zip(names, random_vgg16.features)]
    try:
        random_vgg16.extract(torch.rand(1, 3, 32, 32), ["relu3_1", "relu1_2"])
    finally:
        for h in hooks:
            h.remove()
    assert called == names[: last + 1]


def test_extract_batch_items_are_independent(random_vgg16):
    x = torch.rand(2, 3, 32, 32)
    both = random_vgg16.extract(x, ["relu4_1"])["relu4_1"]
    one = random_vgg16.extract(x[1:], ["relu4_1"])["relu4_1"]
    assert torch.allclose(both[1:], one, atol=1e-5, rtol=1e-4)


def test_conv_is_pre_relu(random_vgg16):
    feats = random_vgg16.extract(smooth_image(32, 32), ["conv1_1", "relu1_1", "conv3_2", "relu3_2"])
    for b in ("1_1", "3_2"):
        conv, relu = feats[f"conv{b}"], feats[f"relu{b}"]
        assert float(conv.min()) < 0
        assert float(relu.min()) >= 0
        assert torch.equal(relu, conv.clamp(min=0))


def test_extract_gradients_flow(random_vgg16):
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    random_vgg16.extract(x, ["relu2_1"])["relu2_1"].sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(not p.requires_grad for p in random_vgg16.parameters())  # frozen


def test_extract_bad_input(random_vgg16):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        random_vgg16.extract(torch.rand(3, 32, 32), ["relu1_1"])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        random_vgg16.extract(torch.rand(1, 4, 32, 32), ["relu1_1"])
    with pytest.raises(ValueError, match="too small for layer relu5_1.*16x16"):
        random_vgg16.extract(torch.rand(1, 3, 8, 8), ["relu1_1", "relu5_1"])


def test_min_input_size(random_vgg19):
    assert random_vgg19.min_input_size(["relu1_1"]) == (1, "relu1_1")
    assert random_vgg19.min_input_size(vgg.GATYS_STYLE_LAYERS) == (16, "relu5_1")
    assert random_vgg19.min_input_size(["relu4_2", "pool5"]) == (32, "pool5")


def test_pooling():
    avg = load_vgg("random:vgg16:0", pooling="avg")
    mx = load_vgg("random:vgg16:0", pooling="max")
    pools = [i for i, n in enumerate(avg.names) if n.startswith("pool")]
    assert len(pools) == 5
    assert all(isinstance(avg.features[i], nn.AvgPool2d) for i in pools)
    assert all(isinstance(mx.features[i], nn.MaxPool2d) for i in pools)
    assert "avg pooling" in avg.describe() and "max pooling" in mx.describe()
    x = smooth_image(16, 16)
    a, m = avg.extract(x, ["pool1"])["pool1"], mx.extract(x, ["pool1"])["pool1"]
    relu = avg.extract(x, ["relu1_2"])["relu1_2"]
    assert torch.allclose(a, nn.functional.avg_pool2d(relu, 2))
    assert torch.allclose(m, nn.functional.max_pool2d(relu, 2))
    with pytest.raises(ValueError, match="pooling"):
        load_vgg("random:vgg16:0", pooling="min")


# -- preprocessing ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _net(convention: str) -> VGGFeatures:
    loaded = W.LoadedWeights(W.random_state_dict("vgg16", 0), "vgg16", convention, "test", False)
    return VGGFeatures(loaded)


def test_preprocess_caffe():
    net = _net("caffe")
    x = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)  # R, G, B
    out = net.preprocess(x).flatten()
    expected = torch.tensor([0.0 * 255 - 103.939, 0.5 * 255 - 116.779, 1.0 * 255 - 123.68])  # B, G, R
    assert torch.allclose(out, expected, atol=1e-4)
    assert "caffe convention" in net.describe()


def test_preprocess_torchvision():
    net = _net("torchvision")
    x = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)
    out = net.preprocess(x).flatten()
    mean, std = torch.tensor(W.IMAGENET_MEAN), torch.tensor(W.IMAGENET_STD)
    assert torch.allclose(out, (torch.tensor([1.0, 0.5, 0.0]) - mean) / std, atol=1e-5)


def test_unknown_convention():
    with pytest.raises(ValueError, match="convention"):
        _net("bgr")


# -- normalize_network -----------------------------------------------------------------------------

def _channel_means(net: VGGFeatures, images, layers) -> dict[str, torch.Tensor]:
    """Mean over images of each image's mean over positions, per channel: {layer: (C,)}."""
    per_image = [net.extract(img, layers) for img in images]
    return {n: torch.stack([f[n].mean(dim=(0, 2, 3)) for f in per_image]).mean(0) for n in layers}


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_normalize_network(random_vgg16, pooling):
    net = random_vgg16 if pooling == "avg" else load_vgg("random:vgg16:0", pooling="max")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = [smooth_image(32, 32, seed=1), smooth_image(32, 48, seed=2)]
    with torch.no_grad():
        normed = normalize_network(net, images)
        relus = [n for n in net.names if n.startswith("relu")]
        orig_means = _channel_means(net, images, relus)
        new_means = _channel_means(normed, images, relus)

        # the original is untouched
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
        assert normed is not net and normed.normalized_on == 2 and "normalized on 2 images" in normed.describe()

        for name in relus:
            alive = orig_means[name] > 0
            assert alive.float().mean() > 0.5, name  # most channels are alive: the test means something
            # A channel that barely fires is divided by a tiny mean, which magnifies float32 rounding,
            # and that differs between CPUs' kernels: 1e-3 for the clearly alive, 1e-2 for every live one.
            clear = orig_means[name] > 1e-2 * orig_means[name][alive].median()
            assert torch.allclose(new_means[name][clear], torch.ones(int(clear.sum())), rtol=1e-3), name
            assert torch.allclose(new_means[name][alive], torch.ones(int(alive.sum())), rtol=1e-2), name
            assert torch.all(new_means[name][~alive] == 0), name

        # Every layer is the original divided by a positive per-channel factor: the mean of the
        # ReLU that follows (conv) or precedes (pool) it. Checked on an image not used above.
        test_img = smooth_image(32, 32, seed=7)
        factor_of = {"conv2_1": "relu2_1", "relu3_1": "relu3_1", "pool3": "relu3_3", "conv4_2": "relu4_2", "relu5_1": "relu5_1"}
        layers = list(factor_of)
        a, b = net.extract(test_img, layers), normed.extract(test_img, layers)
        for name, relu in factor_of.items():
            m = orig_means[relu]
            m = torch.where(m > 0, m, torch.ones_like(m)).view(1, -1, 1, 1)
            scale = a[name].abs().max()
            assert torch.allclose(b[name] * m, a[name], atol=1e-4 * float(scale), rtol=1e-3), name
            assert not torch.allclose(b[name], a[name]), name  # it did rescale


def test_normalize_network_needs_images(random_vgg16):
    with pytest.raises(ValueError, match="at least one image"):
        normalize_network(random_vgg16, [])
