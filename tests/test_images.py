"""nstlib.images: every kind of input becomes (1, 3, H, W) float in [0, 1]; bad input fails early."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from nstlib.images import load_image, resize, save_image, to_pil


def check_image(t: torch.Tensor, h: int | None = None, w: int | None = None) -> None:
    assert isinstance(t, torch.Tensor)
    assert t.dtype == torch.float32
    assert t.ndim == 4 and t.shape[:2] == (1, 3)
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    if h is not None:
        assert t.shape[-2:] == (h, w)


# -- sources ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.bmp", "a.webp"])
def test_load_from_path(make_image_file, name):
    path = make_image_file(name, size=(24, 32))
    t = load_image(path)
    check_image(t, 24, 32)
    assert load_image(str(path)).shape == t.shape


def test_png_pixels_are_exact(make_image_file):
    arr = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = load_image(make_image_file("exact.png", array=arr))
    assert torch.equal(t, torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255)


def test_load_pil_image():
    img = Image.new("RGB", (20, 10), (255, 0, 128))
    t = load_image(img)
    check_image(t, 10, 20)
    assert torch.allclose(t[0, :, 0, 0], torch.tensor([1.0, 0.0, 128 / 255]))


@pytest.mark.parametrize(
    "arr, expected",
    [
        (np.full((4, 6, 3), 255, np.uint8), 1.0),
        (np.full((4, 6, 3), 51, np.uint8), 0.2),
        (np.full((4, 6, 3), 32768, np.uint16), 32768 / 65535),
        (np.full((4, 6, 3), 0.25, np.float32), 0.25),
        (np.full((4, 6, 3), 0.75, np.float64), 0.75),
        (np.ones((4, 6), bool), 1.0),
        (np.full((4, 6), 0.5, np.float32), 0.5),  # grayscale H x W
        (np.full((4, 6, 1), 102, np.uint8), 0.4),
    ],
    ids=["uint8", "uint8-mid", "uint16", "float32", "float64", "bool", "gray-HxW", "gray-HxWx1"],
)
def test_load_numpy(arr, expected):
    t = load_image(arr)
    check_image(t, 4, 6)
    assert torch.allclose(t, torch.full_like(t, expected), atol=1e-6)


def test_numpy_rgba_composited_on_white():
    arr = np.zeros((2, 3, 4), np.uint8)
    arr[..., 0] = 255  # red
    arr[0, :, 3] = 0  # row 0 fully transparent -> white
    arr[1, :, 3] = 255  # row 1 opaque -> red
    arr[1, 2, 3] = 51  # one pixel 20 % opaque -> 80 % white
    t = load_image(arr)
    check_image(t, 2, 3)
    assert torch.allclose(t[0, :, 0, :], torch.ones(3, 3))
    assert torch.allclose(t[0, :, 1, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(t[0, :, 1, 2], torch.tensor([1.0, 0.8, 0.8]), atol=1e-6)


@pytest.mark.parametrize(
    "tensor",
    [
        torch.full((3, 5, 7), 0.5),
        torch.full((1, 3, 5, 7), 0.5),
        torch.full((3, 5, 7), 128, dtype=torch.uint8),
        torch.full((5, 7), 0.5),
        torch.full((1, 5, 7), 0.5),
    ],
    ids=["3HW", "13HW", "uint8", "HW", "1HW"],
)
def test_load_tensor(tensor):
    t = load_image(tensor)
    check_image(t, 5, 7)
    expected = 128 / 255 if tensor.dtype == torch.uint8 else 0.5
    assert torch.allclose(t, torch.full_like(t, expected))


def test_load_tensor_does_not_keep_graph_or_alias():
    src = torch.full((1, 3, 4, 4), 0.5, requires_grad=True)
    t = load_image(src)
    assert not t.requires_grad
    t.add_(0.1)
    assert float(src.detach().max()) == 0.5


# -- resizing ----------------------------------------------------------------------------------

def test_resize_longest_side():
    t = load_image(torch.rand(3, 20, 40), size=10)
    assert t.shape == (1, 3, 5, 10)
    t = load_image(torch.rand(3, 40, 20), size=80)
    assert t.shape == (1, 3, 80, 40)
    check_image(t)


def test_resize_exact():
    t = load_image(np.zeros((20, 40, 3), np.uint8), size=(7, 9))
    assert t.shape == (1, 3, 7, 9)


def test_resize_same_size_is_identity():
    x = torch.rand(1, 3, 8, 8)
    assert resize(x, 8) is x
    assert resize(x, None) is x


def test_resize_keeps_range_and_mean():
    x = torch.rand(1, 3, 64, 64)
    small = resize(x, 16)
    big = resize(x, 128)
    for y in (small, big):
        check_image(y)
        assert abs(float(y.mean()) - float(x.mean())) < 0.02


@pytest.mark.parametrize("size, exc", [(0, ValueError), (-3, ValueError), ((0, 5), ValueError), ((5, 5, 5), ValueError),
                                       ((5.0, 5), ValueError), (True, TypeError), ("10", TypeError), (2.5, TypeError)])
def test_resize_bad_size(size, exc):
    with pytest.raises(exc, match="size"):
        resize(torch.rand(1, 3, 8, 8), size)


# -- file formats ------------------------------------------------------------------------------

def _exif_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value  # Orientation
    return exif


@pytest.mark.parametrize("name", ["rot.jpg", "rot.png"])
def test_exif_orientation_is_honoured(make_image_file, name):
    # Stored 20 wide x 10 high; orientation 6 means "rotate 90 degrees clockwise to display".
    path = make_image_file(name, size=(10, 20), exif=_exif_orientation(6))
    assert Image.open(path).size == (20, 10)
    t = load_image(path)
    check_image(t, 20, 10)
    # also when the student opened the file with PIL first
    assert load_image(Image.open(path)).shape == (1, 3, 20, 10)


def test_exif_rotation_moves_pixels(make_image_file):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[0, 0] = 255  # white top-left corner of the stored image
    path = make_image_file("corner.png", array=arr, exif=_exif_orientation(6))
    t = load_image(path)
    # After a 90 degree clockwise turn the stored top-left is the displayed top-right.
    assert t.shape == (1, 3, 20, 10)
    assert torch.allclose(t[0, :, 0, -1], torch.ones(3))
    assert float(t[0, :, 0, 0].max()) == 0.0


def test_palette_with_transparency(make_image_file, tmp_path):
    img = Image.new("P", (4, 2))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # 0: red, 1: blue
    img.putdata([0, 0, 1, 1, 1, 1, 0, 0])
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)  # red is transparent
    t = load_image(path)
    check_image(t, 2, 4)
    assert torch.allclose(t[0, :, 0, 0], torch.ones(3))  # transparent -> white
    assert torch.allclose(t[0, :, 0, 2], torch.tensor([0.0, 0.0, 1.0]))  # blue stays blue


def test_palette_without_transparency(tmp_path):
    img = Image.new("P", (3, 3))
    img.putpalette([0, 255, 0] + [0] * 765)
    path = tmp_path / "pal-opaque.png"
    img.save(path)
    t = load_image(path)
    assert torch.allclose(t[0, :, 1, 1], torch.tensor([0.0, 1.0, 0.0]))


def test_la_image_composited_on_white():
    img = Image.new("LA", (3, 3), (0, 0))  # black, fully transparent
    assert torch.allclose(load_image(img), torch.ones(1, 3, 3, 3))


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(path, quality=95)  # pure cyan
    assert Image.open(path).mode == "CMYK"
    t = load_image(path)
    check_image(t, 16, 16)
    r, g, b = t[0, :, 8, 8].tolist()
    assert r < 0.15 and g > 0.85 and b > 0.85


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    arr = np.full((6, 5), 32768, np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    t = load_image(path)
    check_image(t, 6, 5)
    assert torch.allclose(t, torch.full_like(t, 0.5), atol=1e-3)  # not 1.0 (white)


def test_grayscale_png(make_image_file):
    t = load_image(make_image_file("gray.png", mode="L"))
    check_image(t, 24, 32)
    assert torch.equal(t[:, 0], t[:, 1]) and torch.equal(t[:, 1], t[:, 2])


# -- bad input: every one fails with a clear error ----------------------------------------------

def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(path)


def test_missing_file_suggests_other_suffix(tmp_path, make_image_file):
    make_image_file("photo.jpg")
    with pytest.raises(FileNotFoundError, match="Did you mean photo.jpg"):
        load_image(tmp_path / "photo.png")


def test_folder(tmp_path):
    with pytest.raises(ValueError, match="folder"):
        load_image(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_image(path)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n" * 20)
    with pytest.raises(ValueError, match="not an image"):
        load_image(path)


@pytest.mark.parametrize("name", ["cut.png", "cut.jpg"])
def test_truncated_file(make_image_file, name):
    path = make_image_file(name, size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or damaged") as err:
        load_image(path)
    assert name in str(err.value)


def test_big_image_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 3000), (10, 20, 30)).save(path)
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1) or real_load(self))
    with pytest.raises(ValueError, match="limit") as err:
        load_image(path, max_pixels=1_000_000)
    assert "9,000,000" in str(err.value) and "max_pixels" in str(err.value)
    assert not decoded, "the pixels were decoded before the size check"


def _png_with_header_size(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header claims width x height (a decompression bomb's header)."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    # IHDR starts at byte 8: length (4), type (4), width (4), height (4), ...
    ihdr = bytes(data[12:29])
    ihdr = ihdr[:4] + struct.pack(">II", width, height) + ihdr[12:]
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(data)


def test_bomb_header_refused_by_default_limit(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_header_size(8000, 8000))  # 64 Mpx: over our 50 Mpx, under Pillow's
    with pytest.raises(ValueError, match="decompression bomb"):
        load_image(path)


def test_huge_bomb_header_refused(tmp_path):
    path = tmp_path / "hugebomb.png"
    path.write_bytes(_png_with_header_size(40000, 40000))  # Pillow itself refuses this one
    with pytest.raises(ValueError, match="decompression bomb"):
        load_image(path)


def test_pil_image_over_limit():
    with pytest.raises(ValueError, match="limit"):
        load_image(Image.new("RGB", (100, 100)), max_pixels=5000)


@pytest.mark.parametrize("arr", [np.zeros((0, 5, 3), np.uint8), np.zeros((4, 0), np.float32)])
def test_zero_size_array(arr):
    with pytest.raises(ValueError, match="empty"):
        load_image(arr)


def test_zero_size_tensor():
    with pytest.raises(ValueError, match="empty"):
        load_image(torch.zeros(3, 0, 4))


def test_float_0_255_hint():
    with pytest.raises(ValueError, match="divide by 255"):
        load_image(np.full((4, 4, 3), 200.0, np.float32))
    with pytest.raises(ValueError, match="divide by 255"):
        load_image(torch.full((3, 4, 4), 200.0))


def test_float_out_of_range_without_255_hint():
    with pytest.raises(ValueError, match=r"\[0, 1\]") as err:
        load_image(np.full((4, 4, 3), -0.5, np.float32))
    assert "255" not in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf(bad):
    arr = np.full((4, 4, 3), 0.5, np.float32)
    arr[1, 1, 1] = bad
    with pytest.raises(ValueError, match="NaN|inf"):
        load_image(arr)
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_image(torch.from_numpy(arr).permute(2, 0, 1))


def test_channels_first_numpy_hint():
    with pytest.raises(ValueError, match=r"transpose\(1, 2, 0\)"):
        load_image(np.zeros((3, 16, 16), np.uint8))


@pytest.mark.parametrize("arr", [np.zeros((5, 6, 2), np.uint8), np.zeros((2, 4, 4, 3), np.uint8)])
def test_bad_array_shape(arr):
    with pytest.raises(ValueError, match="expected an array"):
        load_image(arr)


def test_bad_array_dtype():
    with pytest.raises(TypeError, match="dtype"):
        load_image(np.zeros((4, 4, 3), np.int64))


@pytest.mark.parametrize("t", [torch.rand(2, 3, 4, 4), torch.rand(1, 2, 4, 4), torch.rand(1, 1, 3, 4, 4)])
def test_bad_tensor_shape(t):
    with pytest.raises(ValueError, match="expected a tensor"):
        load_image(t)


def test_bad_tensor_dtype():
    with pytest.raises(TypeError, match="dtype"):
        load_image(torch.zeros(3, 4, 4, dtype=torch.int64))


@pytest.mark.parametrize("bad", [42, [[0.0, 1.0]], None, b"\x89PNG"])
def test_wrong_type(bad):
    with pytest.raises(TypeError, match="expected a path, a PIL image"):
        load_image(bad)


# -- back out: to_pil and save_image -------------------------------------------------------------

def test_to_pil_round_trip():
    x = torch.rand(1, 3, 9, 11)
    pil = to_pil(x)
    assert pil.mode == "RGB" and pil.size == (11, 9)
    back = load_image(pil)
    assert torch.allclose(back, x, atol=0.5 / 255 + 1e-6)
    assert torch.equal(load_image(to_pil(back)), back)  # quantized values survive exactly


def test_to_pil_batch_index_and_clamp():
    x = torch.stack([torch.zeros(3, 2, 2), torch.full((3, 2, 2), 2.0)])
    assert np.asarray(to_pil(x, 1)).max() == 255  # clamped, not wrapped around
    assert np.asarray(to_pil(x, 0)).max() == 0
    assert to_pil(x[1]).size == (2, 2)
    with pytest.raises(IndexError):
        to_pil(x, 2)
    with pytest.raises(ValueError, match="to_pil expected"):
        to_pil(torch.rand(1, 4, 2, 2))
    with pytest.raises(TypeError):
        to_pil(np.zeros((2, 2, 3)))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".JPEG", ".webp", ".bmp", ".tif"])
def test_save_image_formats(tmp_path, suffix):
    x = torch.rand(1, 3, 8, 10)
    path = save_image(x, tmp_path / f"out{suffix}")
    assert path == tmp_path / f"out{suffix}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out{suffix}"]  # no temp files left
    assert load_image(path).shape == (1, 3, 8, 10)


def test_save_image_png_is_lossless_and_replaces(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    x = load_image(to_pil(torch.rand(2, 3, 5, 6), 1))
    save_image(torch.cat([torch.zeros_like(x), x]), path, index=1)
    assert torch.equal(load_image(path), x)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_save_image_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"unknown image suffix '\.gif'.*\.png"):
        save_image(torch.rand(1, 3, 4, 4), tmp_path / "out.gif")
    assert list(tmp_path.iterdir()) == []


def test_save_image_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_image(torch.rand(1, 3, 4, 4), tmp_path / "no" / "such" / "out.png")


def test_save_image_failure_leaves_no_temp_file(tmp_path, monkeypatch):
    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(torch.rand(1, 3, 4, 4), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_save_image_respects_umask(tmp_path):
    # Saved images are meant to be shared (a JupyterHub): not the private 0600 of a temp file.
    old = os.umask(0o022)
    try:
        path = save_image(torch.rand(1, 3, 4, 4), tmp_path / "shared.png")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_save_image_onto_a_folder(tmp_path):
    (tmp_path / "out.png").mkdir()
    with pytest.raises(ValueError, match="folder"):
        save_image(torch.rand(1, 3, 4, 4), tmp_path / "out.png")
