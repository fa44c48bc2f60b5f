"""Reading images and label maps from disk with their real value range.

Intensities keep the range stored in the file: 8-bit files give 0..255 and
16-bit files give 0..65535, never rescaled or truncated to 8 bits. Colour
images become one grayscale channel; label maps keep their integer values.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# ITU-R BT.601 luma weights for R, G, B.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)

# Pillow modes that keep 16 or more bits per value. Any other mode decoded from
# 16-bit samples has lost its low byte.
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

# Decoding errors that Pillow raises for truncated or corrupt files.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


class ImageReadError(ValueError):
  """An image or label map could not be read; the message names the file and the reason."""


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
  """Read a 2-D image as float32 intensities in the file's own range.

  Grayscale files give their stored values (0..255 for 8 bits, 0..65535 for
  16 bits, as stored for 32-bit integer and float files). An RGB image whose
  three channels are equal gives that channel exactly; any other RGB image
  gives its ITU-R BT.601 luma `0.299 R + 0.587 G + 0.114 B`. Images with an
  alpha channel are composited onto black (colour * alpha / max alpha), with
  a logged warning when any pixel is not fully opaque. Palette images are
  read through their palette.

  Args:
    path: image file (PNG, JPEG, TIFF, BMP or any other format Pillow reads).

  Returns:
    float32 `[H, W]` intensities.

  Raises:
    ImageReadError: the file is missing, is not an image, is truncated, has
      several frames, or stores 16-bit colour samples (which Pillow decodes
      to 8 bits).
  """
  path = os.fspath(path)
  with _open_image(path) as image:
    mode = image.mode
    if mode == "P" or mode == "PA":
      # Palette indices are not intensities; read the colours they stand for.
      converted = image.convert("RGBA" if _palette_has_alpha(image) else "RGB")
      mode = converted.mode
      array = np.asarray(converted)
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
      mode = "RGB"
      array = np.asarray(image.convert("RGB"))
    elif mode in ("La", "RGBa"):
      # Pillow undoes the premultiplied alpha here, so the compositing below
      # receives straight colour values.
      mode = "LA" if mode == "La" else "RGBA"
      array = np.asarray(image.convert(mode))
    else:
      array = np.asarray(image)

  if mode in ("LA", "RGBA"):
    array = _composite_on_black(array, path)
    mode = "L" if mode == "LA" else "RGB"
  if mode == "RGB":
    return _rgb_to_gray(array)
  if array.ndim != 2:
    raise ImageReadError(
        f"{path}: unsupported image layout {array.shape} (Pillow mode {image.mode!r}); "
        "expected a 2-D grayscale or RGB(A) image.")
  return array.astype(np.float32)


def read_label_map(path: str | os.PathLike[str]) -> np.ndarray:
  """Read a label map as int32 values exactly as stored.

  Grayscale, 16-bit, 32-bit integer and palette files give their stored
  values (palette files give the palette index of each pixel). An RGB or RGBA
  label map is accepted when its three colour channels are equal, and the
  alpha channel is ignored. A float file is accepted when every value is an
  integer.

  Args:
    path: label map file, normally a PNG.

  Returns:
    int32 `[H, W]` label values.

  Raises:
    ImageReadError: the file cannot be read, or its colour channels differ,
      or it stores non-integer values.
  """
  path = os.fspath(path)
  with _open_image(path) as image:
    fmt = image.format
    mode = image.mode
    if mode in ("La", "RGBa"):
      # Premultiplied alpha scales the colour values; undo it to get the labels.
      mode = "LA" if mode == "La" else "RGBA"
      array = np.asarray(image.convert(mode))
    else:
      array = np.asarray(image)
  if fmt == "JPEG":
    logger.warning(
        "%s: label map stored as JPEG; lossy compression may have changed label values "
        "along edges. Store label maps as PNG.", path)

  if mode in ("LA", "PA"):
    array = array[..., 0]
  elif mode in ("RGB", "RGBA", "RGBX"):
    colour = array[..., :3]
    if not (np.array_equal(colour[..., 0], colour[..., 1]) and
            np.array_equal(colour[..., 0], colour[..., 2])):
      raise ImageReadError(
          f"{path}: colour label map with differing R, G and B channels; a label map must "
          "store one label value per pixel. Save it as a grayscale (mode L or I;16) or "
          "palette PNG.")
    array = colour[..., 0]
  elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
    raise ImageReadError(
        f"{path}: label map in colour mode {mode!r}; save it as a grayscale or palette PNG.")

  if array.ndim != 2:
    raise ImageReadError(
        f"{path}: unsupported label map layout {array.shape} (Pillow mode {mode!r}); "
        "expected a 2-D label map.")
  if np.issubdtype(array.dtype, np.floating):
    if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
      raise ImageReadError(
          f"{path}: float label map with non-integer values; label values must be integers.")
  return array.astype(np.int32)


def _open_image(path: str) -> Image.Image:
  """Open and fully decode one image, turning every failure into ImageReadError."""
  if not os.path.exists(path):
    raise ImageReadError(f"{path}: file not found.")
  if os.path.isdir(path):
    raise ImageReadError(f"{path}: is a folder, expected an image file.")
  try:
    image = Image.open(path)
  except Image.UnidentifiedImageError:
    raise ImageReadError(
        f"{path}: not a recognised image file (Pillow cannot identify its format).") from None
  except _DECODE_ERRORS as e:
    raise ImageReadError(f"{path}: cannot open image ({e}).") from None

  try:
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
      raise ImageReadError(
          f"{path}: contains {frames} frames; expected a single 2-D image. Save each frame "
          "as its own file.")
    raw_mode = _tile_raw_mode(image)
    if raw_mode is not None and ";16" in raw_mode and image.mode not in _WIDE_MODES:
      raise ImageReadError(
          f"{path}: 16-bit colour samples (raw mode {raw_mode!r}) would be decoded to 8 bits "
          f"as Pillow mode {image.mode!r}. Convert the file to 16-bit grayscale.")
    image.load()
  except ImageReadError:
    image.close()
    raise
  except _DECODE_ERRORS as e:
    image.close()
    raise ImageReadError(f"{path}: truncated or corrupt image ({e}).") from None
  return image


def _tile_raw_mode(image: Image.Image) -> str | None:
  """Return the raw sample layout of the first tile, e.g. 'RGB;16B', before decoding."""
  tiles = getattr(image, "tile", None)
  if not tiles:
    return None
  args = tiles[0].args if hasattr(tiles[0], "args") else tiles[0][3]
  if isinstance(args, str):
    return args
  if isinstance(args, tuple) and args and isinstance(args[0], str):
    return args[0]
  return None


def _palette_has_alpha(image: Image.Image) -> bool:
  return image.mode == "PA" or "transparency" in image.info


def _composite_on_black(array: np.ndarray, path: str) -> np.ndarray:
  """Composite `[H, W, C+1]` colour + alpha onto black; returns float64 `[H, W, C]`."""
  colour = array[..., :-1].astype(np.float64)
  alpha = array[..., -1]
  max_alpha = float(np.iinfo(alpha.dtype).max) if alpha.dtype.kind in "ui" else 1.0
  if np.all(alpha == max_alpha):
    return colour if colour.shape[-1] > 1 else colour[..., 0]
  logger.warning(
      "%s: image has transparent pixels; composited onto black (colour * alpha).", path)
  composited = colour * (alpha.astype(np.float64) / max_alpha)[..., None]
  return composited if composited.shape[-1] > 1 else composited[..., 0]


def _rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
  """Return one channel when R, G and B are equal, else BT.601 luma; float32 `[H, W]`."""
  if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
    return rgb[..., 0].astype(np.float32)
  return (rgb.astype(np.float64) @ _LUMA_WEIGHTS).astype(np.float32)
