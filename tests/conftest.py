"""Shared fixtures: seeded random networks, small test images, image files on disk.

Unit tests never read ../shared and never touch the network: the VGG here has seeded random
weights ("random:vgg16:0"), which is enough to test shapes, formulas and the optimizer loop.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

from browser_tools import INSTALL, find_chromium
from nstlib import weights as W
from nstlib.vgg import VGGFeatures, load_vgg


@pytest.fixture
def one_thread():
    """Run torch on one CPU thread during a test, then restore the setting.

    On 32 px images two OpenMP threads mostly wait for each other; with other processes busy on
    a 2-core machine they made the stylize tests 3-8 times slower than one thread.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def random_vgg16() -> VGGFeatures:
    """VGG-16 with seeded random weights (seed 0), avg pooling. Shared: do not modify it."""
    return load_vgg("random:vgg16:0")


@pytest.fixture(scope="session")
def random_vgg19() -> VGGFeatures:
    """VGG-19 with seeded random weights (seed 0), avg pooling. Shared: do not modify it."""
    return load_vgg("random:vgg19:0")


@pytest.fixture(scope="session")
def pretrained_net() -> VGGFeatures:
    """The pretrained network NSTLIB_WEIGHTS names (make test: ../shared/weights), else skip."""
    setting = os.environ.get(W.ENV_VAR, "")
    if not setting:
        pytest.skip(f"{W.ENV_VAR} is not set: this test needs pretrained weights (make test sets it to ../shared/weights when present)")
    spec = W.parse_spec(setting, W.ENV_VAR)
    if spec.kind != "file":
        pytest.skip(f"{W.ENV_VAR}={setting!r} is not a pretrained weights file")
    if not spec.path.exists():
        pytest.skip(f"pretrained weights file {spec.path} is absent")
    return load_vgg(spec)


@pytest.fixture(scope="session")
def paper_images() -> Path:
    """The folder NSTLIB_IMAGE_DIR names, holding the paper's images (tubingen.jpg, ...), else skip."""
    folder = Path(os.environ.get("NSTLIB_IMAGE_DIR", ""))
    if not folder.name or not (folder / "tubingen.jpg").exists():
        pytest.skip("NSTLIB_IMAGE_DIR does not name a folder with the paper's images (tubingen.jpg, ...)")
    return folder


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, h, w) in [0, 1]: smooth colour gradients plus a little seeded noise, deterministic."""
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
    xx = torch.linspace(0, 1, w).view(1, w).expand(h, w)
    phase = torch.rand(3, generator=g) * 6.28
    rgb = torch.stack([0.5 + 0.4 * torch.sin(3 * xx + 2 * yy + phase[c]) for c in range(3)])
    rgb = rgb + 0.05 * torch.randn(3, h, w, generator=g)
    return rgb.clamp(0, 1).unsqueeze(0)


@pytest.fixture
def content_image() -> torch.Tensor:
    """(1, 3, 32, 32) deterministic content image."""
    return smooth_image(32, 32, seed=1)


@pytest.fixture
def style_image() -> torch.Tensor:
    """(1, 3, 32, 32) deterministic style image (stripes)."""
    x = torch.arange(32).float()
    stripes = ((x.view(1, 32) + x.view(32, 1)) % 8 < 4).float()
    return torch.stack([stripes, 1 - stripes, 0.5 * stripes]).unsqueeze(0)


@pytest.fixture
def make_image_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write a small image file and return its path.

    make_image_file(name="img.png", size=(H, W), mode="RGB", array=None, **save_kwargs)
    `array` (H, W[, C]) is written as is (Image.fromarray); otherwise a seeded random image of
    `size` in `mode` is made. The format comes from the suffix.
    """
    counter = iter(range(10**6))

    def make(name: str = "img.png", size: tuple[int, int] = (24, 32), mode: str = "RGB",
             array: np.ndarray | None = None, **save_kwargs: Any) -> Path:
        path = tmp_path / name
        if path.exists():
            path = tmp_path / f"{next(counter)}_{name}"
        if array is not None:
            img = Image.fromarray(array)
        else:
            rng = np.random.default_rng(0)
            h, w = size
            rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
            img = rgb.convert(mode)
        img.save(path, **save_kwargs)
        return path

    return make


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    """A 40x32 content image and a 36x36 style image of seeded noise, as PNG files."""
    rng = np.random.default_rng(0)
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(content)
    Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(style)
    return content, style


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of Chromium, installed by .ci/install-browser.sh if missing; skip with its reason if it cannot be."""
    path = find_chromium()
    if path is None:
        # The install script exits 0 with a one-line reason when it cannot install.
        out = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=1200)
        path = find_chromium()
        if path is None:
            pytest.skip(f"no Chromium for the browser test: {(out.stdout + out.stderr).strip()}")
    return path
