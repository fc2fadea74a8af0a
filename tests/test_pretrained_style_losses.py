"""Every style loss from the command line, at its defaults, gives a transfer of comparable strength.

The gatys variant puts each non-Gram loss on the Gram loss's scale (`nstlib.losses.gram_energy`,
mmd-gaussian times `nstlib.style_losses.GATYS_GAIN`), so one alpha/beta serves every loss. Needs
pretrained weights and the paper's images (see test_pretrained.py); skips otherwise. Measured values are in the comments.
"""

from __future__ import annotations

import json

import pytest
import torch

from nstlib import images, metrics
from nstlib.cli import main

pytestmark = pytest.mark.pretrained

SIZE = 96
PAINTING = "the_scream"


def _transfer(paper_images, out_dir, kind: str) -> tuple[torch.Tensor, dict]:
    out = out_dir / f"{kind}.png"
    code = main(["stylize", str(paper_images / "tubingen.jpg"), str(paper_images / f"{PAINTING}.jpg"), "-o", str(out),
                 "--size", str(SIZE), "--style-loss", kind, "--no-progress"])
    assert code == 0, kind
    return images.load_image(out), json.loads(out.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def gram(pretrained_net, paper_images, tmp_path_factory):
    photo = images.load_image(paper_images / "tubingen.jpg", SIZE)
    painting = images.load_image(paper_images / f"{PAINTING}.jpg", SIZE)
    image, _ = _transfer(paper_images, tmp_path_factory.mktemp("gram"), "gram")
    strength = metrics.style_strength(pretrained_net, image, photo, painting).item()
    return photo, painting, strength, (image - photo).abs().mean().item()


@pytest.mark.parametrize("kind", ["mean-std", "mmd-gaussian", "w2", "sliced"])
def test_each_style_loss_at_the_defaults_moves_the_picture(kind, gram, pretrained_net, paper_images, tmp_path):
    photo, painting, gram_strength, gram_moved = gram
    image, record = _transfer(paper_images, tmp_path, kind)
    assert record["settings"]["style_loss"] == kind
    strength = metrics.style_strength(pretrained_net, image, photo, painting).item()
    moved = (image - photo).abs().mean().item()
    print(f"{kind}: strength {strength:.3f} (gram {gram_strength:.3f}), moved {moved:.4f} (gram {gram_moved:.4f})")
    assert strength > 0.5 * gram_strength, (kind, strength, gram_strength)
    assert moved > 0.5 * gram_moved, (kind, moved, gram_moved)
