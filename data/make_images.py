"""Rebuild the images in data/ (run once by a maintainer; the course never runs it).

    python data/make_images.py --skimage-wheel scikit_image-0.26.0-...whl

1. Photos and textures from scikit-image's data folder: read straight from a scikit-image
   wheel (`pip download scikit-image --no-deps`), so scikit-image is not a dependency.
   Each is shrunk so that its longest side is at most 512 px (never enlarged) with PIL's
   LANCZOS filter and saved as JPEG, quality 90.
2. Images this project makes itself, from a fixed seed: `swirls.jpg` (curling brush-stroke
   texture in night blues and yellows) and `mosaic.png` (bold flat colour cells and circles).
   They stand in for the paintings when the paintings cannot be downloaded.

Licences and credits: data/LICENSES.md.
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
LONGEST_SIDE = 512
SKIMAGE_FILES = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
}


def from_skimage_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for key, fname in SKIMAGE_FILES.items():
            member = f"skimage/data/{fname}"
            if member not in names:
                print(f"{key}: {member} is not in {wheel.name} (fetched on demand by pooch); skipped")
                continue
            img = Image.open(io.BytesIO(zf.read(member)))
            img.load()
            img = img.convert("L" if img.mode in ("L", "I;16", "I") else "RGB")
            scale = LONGEST_SIDE / max(img.size)
            if scale < 1:  # shrink only: enlarging would add no detail, only bytes
                img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
            out = HERE / f"{key}.jpg"
            img.save(out, "JPEG", quality=90, optimize=True)
            print(f"{key}: {img.size[0]}x{img.size[1]} {img.mode} -> {out.name} ({out.stat().st_size:,} bytes)")


def _palette(t: np.ndarray, stops: list[tuple[float, tuple[int, int, int]]]) -> np.ndarray:
    """Map t in [0, 1] (H, W) to colours (H, W, 3) uint8 by piecewise-linear colour stops."""
    xs = np.array([s for s, _ in stops])
    cols = np.array([c for _, c in stops], dtype=np.float64)
    rgb = np.stack([np.interp(t, xs, cols[:, k]) for k in range(3)], axis=-1)
    return rgb.clip(0, 255).astype(np.uint8)


def swirls(size: int = 512, seed: int = 0) -> Image.Image:
    """Line-integral convolution of noise along a field of vortices: long curling strokes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    vx = np.full_like(xx, 0.6)
    vy = 0.25 * np.sin(xx / size * 2 * np.pi * 1.5)
    glow = np.zeros_like(xx)
    for _ in range(7):
        cx, cy = rng.uniform(0.1, 0.9, 2) * size
        r = rng.uniform(0.06, 0.14) * size
        spin = rng.choice([-1.0, 1.0]) * rng.uniform(1.5, 3.0)
        dx, dy = xx - cx, yy - cy
        d2 = dx**2 + dy**2
        falloff = spin * r / (d2 + r**2) * size / 8
        vx += -dy / np.sqrt(d2 + 1) * falloff
        vy += dx / np.sqrt(d2 + 1) * falloff
        glow += np.exp(-d2 / (2 * (0.35 * r) ** 2))
    norm = np.sqrt(vx**2 + vy**2) + 1e-8
    vx, vy = vx / norm, vy / norm
    # Noise a few pixels wide, so that the strokes look painted rather than hairy.
    small = rng.random((size // 3, size // 3))
    noise = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)) / 255.0
    acc = np.zeros_like(xx)
    for direction in (1.0, -1.0):
        px, py = xx.copy(), yy.copy()
        for _ in range(18):
            ix = px.astype(int).clip(0, size - 1)
            iy = py.astype(int).clip(0, size - 1)
            acc += noise[iy, ix]
            px += direction * vx[iy, ix] * 1.5
            py += direction * vy[iy, ix] * 1.5
    lic = (acc - acc.min()) / (acc.max() - acc.min())
    lic = ((lic - 0.5) * 2.2 + 0.5).clip(0, 1)  # stretch the contrast LIC averages away
    t = (0.55 * lic + 0.6 * glow.clip(0, 1)).clip(0, 1)
    stops = [(0.0, (8, 18, 52)), (0.3, (24, 60, 130)), (0.5, (70, 120, 190)), (0.65, (150, 185, 210)),
             (0.8, (235, 205, 80)), (1.0, (255, 245, 190))]
    return Image.fromarray(_palette(t, stops), "RGB")


def mosaic(size: int = 512, seed: int = 1) -> Image.Image:
    """Voronoi cells in flat bold colours with dark outlines, and a few outlined circles."""
    rng = np.random.default_rng(seed)
    colours = np.array([(214, 40, 40), (247, 127, 0), (252, 191, 73), (234, 226, 183), (0, 48, 73),
                        (42, 157, 143), (106, 76, 147), (25, 130, 196)], dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    pts = rng.uniform(0, size, (36, 2)).astype(np.float32)
    d = np.sqrt((xx[..., None] - pts[:, 0]) ** 2 + (yy[..., None] - pts[:, 1]) ** 2)
    order = np.argsort(d, axis=-1)
    nearest = order[..., 0]
    d1, d2 = (np.take_along_axis(d, order[..., k : k + 1], axis=-1)[..., 0] for k in (0, 1))
    # Distance to the bisector of the two nearest sites: an outline of even width.
    gap = np.linalg.norm(pts[order[..., 0]] - pts[order[..., 1]], axis=-1)
    img = colours[rng.integers(0, len(colours), len(pts))][nearest]
    img[(d2**2 - d1**2) / (2 * gap) < 1.5] = (20, 20, 24)
    for _ in range(6):
        cx, cy = rng.uniform(0.1, 0.9, 2) * size
        r = rng.uniform(0.04, 0.12) * size
        dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        img[dist < r] = colours[rng.integers(0, len(colours))]
        img[np.abs(dist - r) < 2.0] = (20, 20, 24)
    return Image.fromarray(img, "RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skimage-wheel", type=Path, help="a scikit-image wheel to read photos and textures from")
    args = parser.parse_args()
    if args.skimage_wheel:
        from_skimage_wheel(args.skimage_wheel)
    swirls().save(HERE / "swirls.jpg", "JPEG", quality=90, optimize=True)
    mosaic().save(HERE / "mosaic.png", "PNG", optimize=True)
    for f in ("swirls.jpg", "mosaic.png"):
        print(f"{f}: {(HERE / f).stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
