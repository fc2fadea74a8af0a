"""Images in, images out.

Every image inside nstlib is a float tensor of shape (1, 3, H, W) with values in [0, 1], RGB.
`load_image` turns whatever a student has (a path, a PIL image, a NumPy array, a tensor) into
that, and `to_pil` / `save_image` turn it back. Bad input fails here, early, with a message that
names the file and says what was expected, instead of deep inside torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from nstlib._io import atomic_write

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]
Size = Union[int, tuple[int, int], None]

#: Images with more pixels than this are refused before they are decoded (a "decompression
#: bomb": a small file that expands to gigabytes). 50 megapixels is a 8660 x 5773 photo;
#: style transfer never needs more. Pass ``max_pixels=`` to `load_image` to change it.
MAX_PIXELS = 50_000_000

_SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def load_image(source: ImageLike, size: Size = None, *, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Load an image as a float tensor (1, 3, H, W) in [0, 1], RGB.

    source: a path, a PIL image, a NumPy array (H, W), (H, W, 3) or (H, W, 4) of uint8, uint16,
        bool or float in [0, 1], or a tensor (3, H, W), (1, 3, H, W), (H, W) or (1, H, W).
    size: None keeps the size; an int resizes so that the longest side has that many pixels;
        a pair (H, W) resizes to exactly that.
    EXIF orientation is honoured; grayscale, palette, CMYK and 16-bit images become RGB;
    transparent images are composited on white.
    """
    name = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        img = _open_path(Path(source), max_pixels)
        return resize(_pil_to_tensor(img, name), size)
    if isinstance(source, Image.Image):
        _check_pixels(source.size, name, max_pixels)
        return resize(_pil_to_tensor(source, name), size)
    if isinstance(source, np.ndarray):
        return resize(_array_to_tensor(source, name), size)
    if isinstance(source, torch.Tensor):
        return resize(_tensor_to_image(source, name), size)
    raise TypeError(
        f"load_image expected a path, a PIL image, a NumPy array or a torch tensor, "
        f"got {type(source).__name__}."
    )


def target_size(hw: tuple[int, int], size: Size) -> tuple[int, int]:
    """The (H', W') `resize` makes of an image (H, W) for `size` (None, longest side, or (H', W'))."""
    h, w = hw
    if size is None:
        return (h, w)
    if isinstance(size, bool) or not isinstance(size, (int, tuple, list)):
        raise TypeError(f"size must be an int (longest side), a pair (height, width) or None, got {size!r}.")
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}.")
        scale = size / max(h, w)
        return (max(1, round(h * scale)), max(1, round(w * scale)))
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size):
        raise ValueError(f"size as a pair must be two positive ints (height, width), got {size!r}.")
    return (int(size[0]), int(size[1]))


def resize(image: torch.Tensor, size: Size) -> torch.Tensor:
    """Resize (1, 3, H, W) -> (1, 3, H', W'): longest side `size` (int) or exactly (H', W').

    Downsampling is antialiased so that a huge photo does not alias into noise.
    """
    h, w = image.shape[-2:]
    new = target_size((h, w), size)
    if new == (h, w):
        return image
    antialias = new[0] < h or new[1] < w
    out = F.interpolate(image, size=new, mode="bicubic", align_corners=False, antialias=antialias)
    return out.clamp_(0.0, 1.0)


def to_pil(image: torch.Tensor, index: int = 0) -> Image.Image:
    """(B, 3, H, W) or (3, H, W) float in [0, 1] -> PIL RGB image (item `index` of a batch)."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"to_pil expected a torch tensor, got {type(image).__name__}.")
    if image.ndim == 4:
        if not 0 <= index < image.shape[0]:
            raise IndexError(f"index {index} is outside the batch of {image.shape[0]} images.")
        image = image[index]
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"to_pil expected a tensor (3, H, W) or (B, 3, H, W), got shape {tuple(image.shape)}.")
    arr = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).cpu().numpy(), mode="RGB")


def save_image(image: torch.Tensor, path: str | os.PathLike, index: int = 0) -> Path:
    """Write (B, 3, H, W) or (3, H, W) to `path` atomically; the format comes from the suffix.

    The file is written to a temporary name beside the target and renamed, so an interrupted
    save never leaves half a PNG where a good one was. Returns the path.
    """
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"cannot save {path}: unknown image suffix {path.suffix!r}; use one of {', '.join(sorted(_SAVE_FORMATS))}."
        )
    pil = to_pil(image, index)
    with atomic_write(path) as f:
        pil.save(f, format=fmt)
    return path


def image_info(image: torch.Tensor) -> str:
    """One line about an image tensor, for notebooks: shape, value range."""
    return f"{tuple(image.shape)} {str(image.dtype).replace('torch.', '')}, values {image.min().item():.3f}..{image.max().item():.3f}"


# -- helpers -------------------------------------------------------------------------------

def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return f"PIL image {source.size[0]}x{source.size[1]} ({source.mode})"
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return f"{type(source).__name__} of shape {tuple(source.shape)}"
    return repr(source)


def _check_pixels(wh: tuple[int, int], name: str, max_pixels: int) -> None:
    w, h = wh
    if w < 1 or h < 1:
        raise ValueError(f"{name}: the image is empty ({w}x{h} pixels).")
    if w * h > max_pixels:
        raise ValueError(
            f"{name}: {w}x{h} = {w * h:,} pixels is more than the limit of {max_pixels:,} "
            f"(a guard against decompression bombs). Resize the image first, or pass "
            f"max_pixels= to load_image if you trust the file."
        )


def _open_path(path: Path, max_pixels: int) -> Image.Image:
    text = str(path)
    if text.startswith(("http:/", "https:/", "ftp:/")):  # Path() folds "//" into "/"
        raise ValueError(
            f"{text.replace(':/', '://', 1)} is a URL; nstlib reads image files, not URLs. Download it first "
            f"(e.g. curl -LO URL, or nstlib.data's cached download for the course images) and pass the file."
        )
    if not path.exists():
        hint = ""
        if path.parent.exists():
            near = sorted(p.name for p in path.parent.iterdir() if p.stem.lower() == path.stem.lower())
            if near:
                hint = f" Did you mean {', '.join(near)}?"
        raise FileNotFoundError(f"no image file at {path} (working directory: {Path.cwd()}).{hint}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an image file.")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is an empty file (0 bytes), not an image.")
    try:
        # Pillow's own bomb check warns at ~89 Mpx and errors at ~179 Mpx; ours is stricter and
        # runs on the header alone, before any pixel is decoded.
        img = Image.open(path)
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not an image Pillow can read (expected PNG, JPEG, WebP, TIFF, ...).") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path}: refused as a possible decompression bomb: {e}") from None
    try:
        _check_pixels(img.size, str(path), max_pixels)
        img.load()
    except (OSError, SyntaxError) as e:
        img.close()
        raise ValueError(f"{path} could not be decoded: {e}. The file is probably truncated or damaged.") from None
    except BaseException:
        img.close()
        raise
    return img


def _pil_to_tensor(img: Image.Image, name: str) -> torch.Tensor:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and 32-bit single-channel images: Pillow's convert("RGB") would clip them to
        # 0..255 and show mostly white, so scale by their range instead.
        arr = np.asarray(img).astype(np.float32)
        if img.mode == "F":
            return _array_to_tensor(arr, name)
        # Mode "I" (32-bit) is also what some tools write for 8-bit grey: judge by the values.
        top = 255.0 if img.mode == "I" and arr.size and float(arr.max()) <= 255.0 else 65535.0
        if img.mode == "I" and arr.size and (float(arr.min()) < 0 or float(arr.max()) > 65535.0):
            raise ValueError(f"{name}: a 32-bit integer image with values {arr.min():.0f}..{arr.max():.0f}; expected "
                             f"0..255 or 0..65535. Rescale it to 8 or 16 bits first.")
        return _array_to_tensor(arr / top, name)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def _array_to_tensor(arr: np.ndarray, name: str) -> torch.Tensor:
    if arr.size == 0:
        raise ValueError(f"{name}: the image is empty.")
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and (
            arr.shape[-1] > 4 or (arr.shape[1] > 4 and arr.shape[0] <= arr.shape[-1])):
        # (3, H, 3) would otherwise pass as an RGB image 3 pixels high; (4, 6, 3) stays a tiny RGB image.
        raise ValueError(
            f"{name}: NumPy images are expected as (H, W, channels); this looks channels-first "
            f"(C, H, W) = {arr.shape}. Use arr.transpose(1, 2, 0)."
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name}: expected an array (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}.")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    elif arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        _check_unit_range(float(np.nanmin(arr)), float(np.nanmax(arr)), not bool(np.isfinite(arr).all()), name)
    else:
        raise TypeError(f"{name}: unsupported dtype {arr.dtype}; expected uint8, uint16, bool or float in [0, 1].")
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0)
    return _to_rgb(t)


def _tensor_to_image(t: torch.Tensor, name: str) -> torch.Tensor:
    t = t.detach()
    if t.numel() == 0:
        raise ValueError(f"{name}: the image is empty.")
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[0] != 1 or t.shape[1] not in (1, 3, 4):
        raise ValueError(
            f"{name}: expected a tensor (3, H, W), (1, 3, H, W), (H, W) or (1, H, W); "
            f"got shape {tuple(t.shape)}. A batch of several images must be loaded one by one."
        )
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.dtype == torch.bool:
        t = t.float()
    elif t.is_floating_point():
        t = t.float()
        finite = t[torch.isfinite(t)]
        lo, hi = (finite.min().item(), finite.max().item()) if finite.numel() else (0.0, 0.0)
        _check_unit_range(lo, hi, not bool(torch.isfinite(t).all()), name)
    else:
        raise TypeError(f"{name}: unsupported dtype {t.dtype}; expected uint8 or float in [0, 1].")
    return _to_rgb(t.cpu().contiguous())


def _check_unit_range(lo: float, hi: float, nonfinite: bool, name: str) -> None:
    if nonfinite:
        raise ValueError(f"{name}: the image contains NaN or infinite values.")
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = " It looks like 0..255 values: divide by 255." if hi <= 255 and lo >= 0 else ""
        raise ValueError(f"{name}: float images must have values in [0, 1], got {lo:.3g}..{hi:.3g}.{hint}")


def _to_rgb(t: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) with C in {1, 3, 4} -> (1, 3, H, W); alpha is composited on white."""
    c = t.shape[1]
    if c == 1:
        t = t.expand(-1, 3, -1, -1)
    elif c == 4:
        rgb, a = t[:, :3], t[:, 3:4]
        t = rgb * a + (1 - a)
    return t.clamp(0, 1).contiguous()
