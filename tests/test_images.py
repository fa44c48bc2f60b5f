"""Tests for reading images and label maps, and for the atomic writers."""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mask_hybridgnet_jax.io import atomic
from mask_hybridgnet_jax.io import images
from mask_hybridgnet_jax.io.images import ImageReadError


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_png_16bit_rgb(path, rgb: np.ndarray) -> None:
  """Encode a 16-bit RGB PNG by hand (Pillow cannot write one)."""
  height, width, _ = rgb.shape
  big_endian = rgb.astype(">u2")
  raw = b"".join(b"\x00" + big_endian[r].tobytes() for r in range(height))
  header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
  data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) +
          _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))
  with open(path, "wb") as f:
    f.write(data)


# read_image


def test_read_16bit_png_exact(tmp_path):
  values = np.array([[0, 300], [4196, 65535]], dtype=np.uint16)
  path = tmp_path / "a.png"
  Image.fromarray(values).save(path)
  image = images.read_image(path)
  assert image.dtype == np.float32
  np.testing.assert_array_equal(image, values.astype(np.float32))


def test_read_8bit_png_exact(tmp_path):
  values = np.random.default_rng(0).integers(0, 256, size=(5, 7), dtype=np.uint8)
  path = tmp_path / "a.png"
  Image.fromarray(values).save(path)
  np.testing.assert_array_equal(images.read_image(path), values.astype(np.float32))


def test_read_16bit_tiff_exact(tmp_path):
  values = np.array([[1, 2, 40000], [65535, 0, 257]], dtype=np.uint16)
  path = tmp_path / "a.tif"
  Image.fromarray(values).save(path)
  np.testing.assert_array_equal(images.read_image(path), values.astype(np.float32))


def test_rgb_equal_channels_equals_gray(tmp_path):
  gray = np.random.default_rng(1).integers(0, 256, size=(6, 4), dtype=np.uint8)
  Image.fromarray(gray).save(tmp_path / "gray.png")
  Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "rgb.png")
  np.testing.assert_array_equal(
      images.read_image(tmp_path / "rgb.png"), images.read_image(tmp_path / "gray.png"))


def test_rgb_gives_bt601_luma(tmp_path):
  rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / "rgb.png")
  expected = np.array([[0.299 * 255, 0.587 * 255],
                       [0.114 * 255, 0.299 * 10 + 0.587 * 20 + 0.114 * 30]])
  np.testing.assert_allclose(images.read_image(tmp_path / "rgb.png"), expected, rtol=1e-6)


def test_rgba_transparent_composites_black(tmp_path, caplog):
  rgba = np.zeros((4, 4, 4), dtype=np.uint8)
  rgba[..., :3] = 255  # White everywhere, but transparent outside the object.
  rgba[1:3, 1:3, :3] = 100
  rgba[1:3, 1:3, 3] = 255
  path = tmp_path / "rgba.png"
  Image.fromarray(rgba).save(path)
  expected = np.zeros((4, 4), dtype=np.float32)
  expected[1:3, 1:3] = 100
  with caplog.at_level(logging.WARNING, logger=images.__name__):
    image = images.read_image(path)
  np.testing.assert_array_equal(image, expected)
  warnings = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
  assert len(warnings) == 1
  assert "transparent" in warnings[0]


def test_rgba_half_alpha_scales_colour(tmp_path):
  rgba = np.array([[[200, 200, 200, 51]]], dtype=np.uint8)
  path = tmp_path / "rgba.png"
  Image.fromarray(rgba).save(path)
  np.testing.assert_allclose(images.read_image(path), [[200 * 51 / 255]], rtol=1e-6)


def test_rgba_opaque_no_warning(tmp_path, caplog):
  rgba = np.full((3, 3, 4), 255, dtype=np.uint8)
  rgba[..., :3] = 17
  path = tmp_path / "rgba.png"
  Image.fromarray(rgba).save(path)
  with caplog.at_level(logging.WARNING, logger=images.__name__):
    image = images.read_image(path)
  np.testing.assert_array_equal(image, np.full((3, 3), 17, dtype=np.float32))
  assert not caplog.records


def test_la_composites_black(tmp_path):
  la = np.array([[[90, 255], [90, 0]]], dtype=np.uint8)
  path = tmp_path / "la.png"
  Image.fromarray(la, mode="LA").save(path)
  np.testing.assert_array_equal(images.read_image(path), [[90.0, 0.0]])


def test_palette_reads_colours(tmp_path):
  palette_image = Image.new("P", (2, 1))
  palette_image.putpalette([0, 0, 0, 50, 50, 50, 255, 0, 0] + [0] * (256 * 3 - 9))
  palette_image.putdata([1, 2])
  path = tmp_path / "p.png"
  palette_image.save(path)
  np.testing.assert_allclose(images.read_image(path), [[50.0, 0.299 * 255]], rtol=1e-6)


def test_jpeg_reads(tmp_path):
  ramp = np.tile(np.linspace(0, 255, 32), (16, 1)).astype(np.uint8)
  path = tmp_path / "a.jpg"
  Image.fromarray(ramp).save(path, quality=95)
  image = images.read_image(path)
  assert image.shape == (16, 32)
  assert image.dtype == np.float32
  assert np.abs(image - ramp).max() <= 8


def test_truncated_png_raises(tmp_path):
  values = np.random.default_rng(2).integers(0, 256, size=(64, 64), dtype=np.uint8)
  full = tmp_path / "full.png"
  Image.fromarray(values).save(full)
  truncated = tmp_path / "truncated.png"
  truncated.write_bytes(full.read_bytes()[:200])
  with pytest.raises(ImageReadError, match="truncated.png"):
    images.read_image(truncated)


def test_text_file_raises(tmp_path):
  path = tmp_path / "x.png"
  path.write_text("not an image\n")
  with pytest.raises(ImageReadError, match="x.png"):
    images.read_image(path)


def test_missing_file_raises(tmp_path):
  with pytest.raises(ImageReadError, match="not found"):
    images.read_image(tmp_path / "missing.png")


def test_16bit_rgb_png_raises(tmp_path):
  path = tmp_path / "rgb16.png"
  _write_png_16bit_rgb(path, np.full((2, 2, 3), 4196, dtype=np.uint16))
  with pytest.raises(ImageReadError, match="16-bit colour"):
    images.read_image(path)


def test_image_suffixes_lowercase():
  assert images.IMAGE_SUFFIXES == (
      ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".mha", ".mhd", ".nii", ".nii.gz", ".dcm")


# read_label_map


def test_label_map_8bit_values(tmp_path):
  labels = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
  Image.fromarray(labels).save(tmp_path / "m.png")
  result = images.read_label_map(tmp_path / "m.png")
  assert result.dtype == np.int32
  np.testing.assert_array_equal(result, labels)


def test_label_map_16bit_values(tmp_path):
  labels = np.array([[0, 300], [1000, 65535]], dtype=np.uint16)
  Image.fromarray(labels).save(tmp_path / "m.png")
  np.testing.assert_array_equal(images.read_label_map(tmp_path / "m.png"), labels)


def test_label_map_palette_gives_indices(tmp_path):
  palette_image = Image.new("P", (3, 1))
  palette_image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
  palette_image.putdata([0, 1, 2])
  palette_image.save(tmp_path / "m.png")
  np.testing.assert_array_equal(images.read_label_map(tmp_path / "m.png"), [[0, 1, 2]])


def test_label_map_equal_rgb_accepted(tmp_path):
  labels = np.array([[0, 1], [2, 0]], dtype=np.uint8)
  Image.fromarray(np.stack([labels] * 3, axis=-1)).save(tmp_path / "m.png")
  np.testing.assert_array_equal(images.read_label_map(tmp_path / "m.png"), labels)


def test_label_map_unequal_rgb_raises(tmp_path):
  rgb = np.zeros((2, 2, 3), dtype=np.uint8)
  rgb[0, 0] = (255, 0, 0)
  path = tmp_path / "colour.png"
  Image.fromarray(rgb).save(path)
  with pytest.raises(ImageReadError, match="colour.png"):
    images.read_label_map(path)


def test_label_map_text_file_raises(tmp_path):
  path = tmp_path / "m.png"
  path.write_text("labels")
  with pytest.raises(ImageReadError, match="m.png"):
    images.read_label_map(path)


# atomic writers


def test_json_nan_written_as_null(tmp_path):
  path = tmp_path / "sub" / "r.json"
  atomic.write_json_atomic(path, {"b": float("nan"), "a": np.float32(1.5), "c": [np.int64(3)]})
  text = path.read_text()
  assert json.loads(text) == {"b": None, "a": 1.5, "c": [3]}
  assert text.index('"b"') < text.index('"a"')  # Insertion order kept.
  assert text.startswith('{\n  "b"')  # Indent 2.


def test_json_infinity_raises(tmp_path):
  with pytest.raises(ValueError, match=r"\$\.x\[1\]"):
    atomic.write_json_atomic(tmp_path / "r.json", {"x": [0.0, float("inf")]})


def test_json_infinity_leaves_no_file(tmp_path):
  with pytest.raises(ValueError):
    atomic.write_json_atomic(tmp_path / "r.json", {"x": float("-inf")})
  assert os.listdir(tmp_path) == []


def test_text_overwrites_without_leftovers(tmp_path):
  path = tmp_path / "t.txt"
  atomic.write_text_atomic(path, "old")
  atomic.write_text_atomic(path, "new ü")
  assert path.read_text(encoding="utf-8") == "new ü"
  assert os.listdir(tmp_path) == ["t.txt"]


def test_bytes_file_mode_follows_umask(tmp_path):
  path = tmp_path / "b.bin"
  atomic.write_bytes_atomic(path, b"\x00\x01")
  umask = os.umask(0)
  os.umask(umask)
  assert (os.stat(path).st_mode & 0o777) == (0o666 & ~umask)


def test_png_uint16_round_trip(tmp_path):
  values = np.array([[0, 300], [4196, 65535]], dtype=np.uint16)
  path = tmp_path / "deep" / "m.png"
  atomic.write_png_atomic(path, values)
  np.testing.assert_array_equal(images.read_label_map(path), values)


def test_png_rgba_round_trip(tmp_path):
  values = np.random.default_rng(3).integers(0, 256, size=(3, 5, 4), dtype=np.uint8)
  path = tmp_path / "o.png"
  atomic.write_png_atomic(path, values)
  with Image.open(path) as image:
    np.testing.assert_array_equal(np.asarray(image), values)


def test_png_bool_raises(tmp_path):
  with pytest.raises(ValueError, match="bool"):
    atomic.write_png_atomic(tmp_path / "m.png", np.zeros((2, 2), dtype=bool))
