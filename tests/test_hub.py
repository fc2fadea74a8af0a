"""A class on one machine: weights memory-mapped from torch's cache (kernels share the pages,
the classifier is never read), and the threads per kernel (NSTLIB_THREADS, a hub default)."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from nstlib import threads
from nstlib import weights as W

from hub_tools import make_standin_vgg19, run_kernels


@pytest.fixture
def fresh_threads(monkeypatch):
    old = torch.get_num_threads()
    threads._reset_for_tests()
    for var in (threads.ENV_VAR, "JUPYTERHUB_USER"):
        monkeypatch.delenv(var, raising=False)
    yield
    threads._reset_for_tests()
    torch.set_num_threads(old)


def test_torchvision_urls_match_torchvision():
    import torchvision
    assert W.TORCHVISION_URLS["vgg19"] == torchvision.models.VGG19_Weights.IMAGENET1K_V1.url
    assert W.TORCHVISION_URLS["vgg16"] == torchvision.models.VGG16_Weights.IMAGENET1K_V1.url


def test_default_weights_are_memory_mapped_and_skip_the_classifier(tmp_path, monkeypatch):
    """The cached checkpoint (real layout, classifier included) is mapped, not read: the features'
    parameters live in the file's pages, and loading imports no torchvision."""
    from hub_tools import standin_state
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(W.ENV_VAR, raising=False)
    state = {k: v for k, v in standin_state().items() if k.startswith("features.")}
    state["classifier.6.bias"] = torch.zeros(1000)
    url, cached = W.torchvision_checkpoint()
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    from nstlib.vgg import load_vgg
    net = load_vgg()
    assert torch.equal(net.features[34].weight, state["features.34.weight"])
    maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else str(cached)
    assert str(cached) in maps, "the parameters should be views of the memory-mapped checkpoint"


def test_threads_setting_applied_once_on_load(fresh_threads, monkeypatch):
    import nstlib  # noqa: F401  importing changes nothing
    monkeypatch.setenv(threads.ENV_VAR, "1")
    torch.set_num_threads(2)
    import importlib
    importlib.reload(nstlib)
    assert torch.get_num_threads() == 2
    from nstlib.vgg import load_vgg
    load_vgg("random:vgg16:0")
    assert torch.get_num_threads() == 1
    assert "NSTLIB_THREADS=1" in threads.threads_line()
    torch.set_num_threads(2)  # the program's own choice later on is not overridden again
    load_vgg("random:vgg16:0")
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("env, usable, hub, expected", [
    ({}, 2, False, 2),                       # a laptop: torch's default
    ({}, 1, False, 1),                       # a container limited to 1 CPU
    ({"JUPYTERHUB_USER": "ada"}, 2, True, 1),  # a hub without a CPU limit: 1 per kernel
    ({"NSTLIB_THREADS": "2", "JUPYTERHUB_USER": "ada"}, 2, True, 2),
])
def test_threads_default(fresh_threads, monkeypatch, env, usable, hub, expected):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(threads, "usable_cpus", lambda: usable)
    assert threads.choose_threads(2)[0] == expected


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_threads_setting_is_refused(fresh_threads, monkeypatch, bad):
    monkeypatch.setenv(threads.ENV_VAR, bad)
    with pytest.raises(ValueError, match="NSTLIB_THREADS.*positive whole number"):
        threads.choose_threads(2)


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux /proc/PID/smaps_rollup")
def test_four_kernels_share_the_weights(tmp_path_factory):
    """4 kernels load VGG-19 from the cache (a 575 MB stand-in, real layout) and run one 192x256
    forward: each at most 500 MB PSS and 900 MB peak RSS (was ~540 MB and ~1.48 GB)."""
    home = tmp_path_factory.mktemp("torch-home")
    make_standin_vgg19(home)
    res = run_kernels(4, home)
    for r in res:
        assert r["pss_mib"] <= 500, res
        assert r["peak_rss_mib"] <= 900, res
