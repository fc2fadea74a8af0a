"""nstlib.selfcheck_vgg: notebook 2's extractor check passes a correct `extract`, names each typical
mistake in its one line, and its reference equals the library's `VGGFeatures.extract`."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from nstlib import selfcheck, selfcheck_vgg, vgg, weights


def verdict(capsys: pytest.CaptureFixture[str], fn) -> tuple[bool, str]:
    ok = selfcheck_vgg.check_extract(fn)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, f"a check prints exactly one line, got {lines}"
    assert lines[0].startswith(selfcheck.PASS if ok else selfcheck.FAIL), lines[0]
    return ok, lines[0]


def fails_with(capsys, fn, *words: str) -> None:
    ok, line = verdict(capsys, fn)
    assert not ok, f"a wrong function passed: {line}"
    for word in words:
        assert word in line, f"expected {word!r} in the hint: {line}"


# The right answer the mistakes below start from (the exercise's own solution passes in test_student).
solution = selfcheck_vgg.library_extract


def test_the_library_passes(capsys):
    ok, line = verdict(capsys, solution)
    assert ok and "stops at the deepest layer" in line, line


def test_a_stub_is_not_written_yet(capsys):
    def stub(features, names, x, layers):
        raise NotImplementedError
    fails_with(capsys, stub, "not written yet")


def test_running_the_whole_network(capsys):
    def whole(features, names, x, layers):
        out = {}
        for name, module in zip(names, features):
            x = module(x)
            if name in layers:
                out[name] = x
        return out
    fails_with(capsys, whole, "ran", "modules where", "stop after the deepest layer")


def test_the_last_layer_of_the_list_is_not_the_deepest(capsys):
    def by_last(features, names, x, layers):
        out = {}
        for i in range(names.index(layers[-1]) + 1):
            x = features[i](x)
            if names[i] in layers:
                out[names[i]] = x
        return out
    fails_with(capsys, by_last, "any order", "deepest")


def test_output_of_the_next_module(capsys):
    def off_by_one(features, names, x, layers):
        last = max(names.index(name) for name in layers)
        out = {}
        for i in range(last + 2):
            x = features[i](x)
            if i >= 1 and names[i - 1] in layers:
                out[names[i - 1]] = x
        return out
    fails_with(capsys, off_by_one, "holds the output of", "right after running it")


def test_no_gradient(capsys):
    def detached(features, names, x, layers):
        with torch.no_grad():
            return solution(features, names, x, layers)
    fails_with(capsys, detached, "carries no gradient", "torch.no_grad()")


def test_a_list_instead_of_a_dict(capsys):
    def as_list(features, names, x, layers):
        return list(solution(features, names, x, layers).values())
    fails_with(capsys, as_list, "returned list", "expected a dict")


def test_extra_layers(capsys):
    def every_layer(features, names, x, layers):
        out = solution(features, names, x, layers)
        out[names[0]] = features[0](x)
        return out
    fails_with(capsys, every_layer, "not asked for")


def test_the_reference_equals_the_library_extract():
    net = vgg.load_vgg("random:vgg19:2")
    x = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(0))
    layers = ["relu4_2", "conv1_1", "pool3"]
    mine = selfcheck_vgg.library_extract(net.features, net.names, net.preprocess(x), layers)
    library = net.extract(x, layers)
    assert list(mine) == ["conv1_1", "pool3", "relu4_2"]
    for name in layers:
        assert torch.equal(mine[name], library[name]), name


def test_the_reference_names_an_unknown_layer():
    net = vgg.load_vgg("random:vgg16:0")
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['conv5_4'\]"):
        selfcheck_vgg.library_extract(net.features, net.names, torch.rand(1, 3, 32, 32), ["conv5_4"])


@pytest.mark.parametrize("arch, convention", [("vgg16", "torchvision"), ("vgg19", "torchvision"), ("vgg16", "caffe")])
def test_notebook_2s_torchvision_extractor_equals_the_library(tmp_path, arch, convention):
    """Notebook 2 builds the extractor from torchvision's module, ReLUs not in place and average
    pooling, with its Normalization in front ((x - mean) / std, Caffe's as (x_bgr - mean / 255) / (1 / 255)):
    the library's network on the same weights gives the same features, bit for bit."""
    file = tmp_path / f"{arch}.pth"
    torch.save(weights.random_state_dict(arch, seed=1), file)
    spec = f"{convention}:{arch}:{file}"
    loaded = weights.load(weights.parse_spec(spec))
    features = getattr(torchvision.models, arch)().features
    features.load_state_dict(loaded.state_dict)
    for i, module in enumerate(features):
        if isinstance(module, nn.MaxPool2d):
            features[i] = nn.AvgPool2d(kernel_size=2, stride=2)
        elif isinstance(module, nn.ReLU):
            features[i] = nn.ReLU(inplace=False)
    if convention == "caffe":
        mean, std, bgr = [m / 255 for m in weights.CAFFE_MEAN_BGR], [1 / 255] * 3, True
    else:
        mean, std, bgr = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], False
    mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    net = vgg.load_vgg(spec)
    x = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(4))
    names = net.names
    with torch.no_grad():
        mine = selfcheck_vgg.library_extract(features, names, ((x.flip(1) if bgr else x) - mean) / std, names)
        library = net.extract(x, names)
    for name in names:
        assert torch.equal(mine[name], library[name]), name


def test_notebook_2s_network_cell_takes_torchvisions_weights_online(monkeypatch):
    """The branch a student with internet takes (Colab, a laptop): notebook 2's network cell calls
    torchvision.models.vgg19(weights=VGG19_Weights.IMAGENET1K_V1). Here the download is replaced by
    a state dict of the right layout (random values), so that the real torchvision code path runs."""
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parent.parent / "notebooks" / "02_content_reconstruction.ipynb")
                    .read_text(encoding="utf-8"))
    source = "".join(next(c["source"] for c in nb["cells"] if c.get("id") == "spine-network-code"))
    downloads = []

    def fake_download(url, *args, **kwargs):
        downloads.append(url)
        return torchvision.models.vgg19().state_dict()

    import torchvision.models._api as api  # Weights.get_state_dict downloads through this name

    monkeypatch.setattr(api, "load_state_dict_from_url", fake_download)
    monkeypatch.delenv("NSTLIB_WEIGHTS", raising=False)
    namespace = {"torch": torch, "torchvision": torchvision, "nn": nn, "weights": weights}
    exec(source, namespace)
    assert downloads == [torchvision.models.VGG19_Weights.IMAGENET1K_V1.url]
    assert len(namespace["features"]) == 37
    norm = namespace["normalization"]
    x = torch.rand(1, 3, 8, 8)
    expected = (x - torch.tensor(weights.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(weights.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.equal(norm(x), expected)
