"""Reading images and label maps from disk with their real value range.

Intensities keep the range stored in the file: 8-bit files give 0..255 and
16-bit files give 0..65535, never rescaled or truncated to 8 bits. Colour
images become one grayscale channel; label maps keep their integer values.

The reader is chosen by the file suffix: MetaImage (`.mha`, `.mhd`), NIfTI
(`.nii`, `.nii.gz`) and DICOM (`.dcm`) go to the readers in `metaimage.py`,
`nifti.py` and `dicom.py`, and every other suffix goes to Pillow. Only 2-D
images are read here; read volumes with `read_metaimage`, `read_nifti` or
`read_dicom`.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
METAIMAGE_SUFFIXES = (".mha", ".mhd")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm",)

# Every suffix `read_image` accepts, lower case. `.nii.gz` has two parts, so
# compare it with `image_suffix(path)`, never with `os.path.splitext`.
IMAGE_SUFFIXES = PILLOW_SUFFIXES + METAIMAGE_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES

# Suffixes made of two parts that identify one format.
_DOUBLE_SUFFIXES = (".nii.gz",)

# ITU-R BT.601 luma weights for R, G, B.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)

# Pillow modes that keep 16 or more bits per value. Any other mode decoded from
# 16-bit samples has lost its low byte.
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

# Decoding errors that Pillow raises for truncated or corrupt files.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


class ImageReadError(ValueError):
  """An image or label map could not be read; the message names the file and the reason."""


def image_suffix(path: str | os.PathLike[str]) -> str:
  """Return the lower-case suffix that identifies the format of `path`.

  This is the last suffix (`a.b.PNG` -> `.png`), except for the two-part
  `.nii.gz`. A name without a suffix gives `''`.
  """
  name = os.path.basename(os.fspath(path)).lower()
  for suffix in _DOUBLE_SUFFIXES:
    if name.endswith(suffix) and len(name) > len(suffix):
      return suffix
  return os.path.splitext(name)[1]


def image_stem(path: str | os.PathLike[str]) -> str:
  """Return the file name of `path` without `image_suffix(path)` (`a.nii.gz` -> `a`)."""
  name = os.path.basename(os.fspath(path))
  return name[:len(name) - len(image_suffix(name))]


def read_image_with_spacing(
    path: str | os.PathLike[str]) -> tuple[np.ndarray, tuple[float, float] | None]:
  """Read a 2-D image and its pixel size where the format stores one.

  MetaImage gives ElementSpacing, NIfTI its voxel sizes and DICOM its
  PixelSpacing (or ImagerPixelSpacing). Pillow formats give None, because
  their resolution fields (DPI) do not describe the anatomy.

  Args:
    path: image file with a suffix in `IMAGE_SUFFIXES`.

  Returns:
    (float32 `[H, W]` intensities as `read_image` returns them, `(row_mm,
    col_mm)` or None).

  Raises:
    ImageReadError: as `read_image`.
  """
  path = os.fspath(path)
  suffix = image_suffix(path)
  if suffix in METAIMAGE_SUFFIXES:
    return _read_metaimage_2d(path)
  if suffix in NIFTI_SUFFIXES:
    return _read_nifti_2d(path, label_map=False)
  if suffix in DICOM_SUFFIXES:
    return _read_dicom_2d(path)
  return _read_pillow_image(path), None


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
  """Read a 2-D image as float32 intensities in the file's own range.

  Grayscale files give their stored values (0..255 for 8 bits, 0..65535 for
  16 bits, as stored for 32-bit integer and float files). An RGB image whose
  three channels are equal gives that channel exactly; any other RGB image
  gives its ITU-R BT.601 luma `0.299 R + 0.587 G + 0.114 B`. Images with an
  alpha channel are composited onto black (colour * alpha / max alpha), with
  a logged warning when any pixel is not fully opaque. Palette images are
  read through their palette.

  MetaImage: a 2-D image, or a 3-D one with a single slice. A 3-component
  image, stored either as 3 channels or as 3 slices, gives the component
  when all three are equal (as in PSFHS); 3 unequal channels give BT.601
  luma. NIfTI: a 2-D image or a volume of one slice. DICOM: a single frame
  after the modality LUT, with MONOCHROME1 inverted (see `dicom.read_dicom`).

  Args:
    path: image file: PNG, JPEG, TIFF, BMP (or any other format Pillow
      reads), `.mha`, `.mhd`, `.nii`, `.nii.gz` or `.dcm`.

  Returns:
    float32 `[H, W]` intensities.

  Raises:
    ImageReadError: the file is missing, is not an image, is truncated, has
      several frames or slices, or stores 16-bit colour samples (which
      Pillow decodes to 8 bits).
  """
  return read_image_with_spacing(path)[0]


def _read_pillow_image(path: str) -> np.ndarray:
  """Read a Pillow-supported image as float32 `[H, W]` (see `read_image`)."""
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

  MetaImage and NIfTI label maps must be 2-D or hold one slice, and a
  3-component MetaImage is accepted when its components are equal. DICOM
  label maps give their values after the modality LUT and are never
  inverted, whatever their photometric interpretation.

  Args:
    path: label map file, normally a PNG; also `.mha`, `.mhd`, `.nii`,
      `.nii.gz` or `.dcm`.

  Returns:
    int32 `[H, W]` label values.

  Raises:
    ImageReadError: the file cannot be read, or its colour channels differ,
      or it stores non-integer values.
  """
  path = os.fspath(path)
  suffix = image_suffix(path)
  if suffix in METAIMAGE_SUFFIXES:
    return _integer_labels(_read_metaimage_2d(path, label_map=True)[0], path)
  if suffix in NIFTI_SUFFIXES:
    return _integer_labels(_read_nifti_2d(path, label_map=True)[0], path)
  if suffix in DICOM_SUFFIXES:
    return _integer_labels(_read_dicom_label_map(path), path)

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
  return _integer_labels(array, path)


def _integer_labels(array: np.ndarray, path: str) -> np.ndarray:
  """Return `array` as int32, raising when a float value is not an integer or out of range."""
  if np.issubdtype(array.dtype, np.floating):
    if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
      raise ImageReadError(
          f"{path}: float label map with non-integer values; label values must be integers.")
  if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
    raise ImageReadError(
        f"{path}: label values from {array.min()} to {array.max()} do not fit in int32.")
  return array.astype(np.int32)


# ----------------------------------------------------------------------------
# MetaImage, NIfTI and DICOM files as 2-D images. The readers are imported
# here, not at the top, because they import ImageReadError from this module.


def _read_metaimage_2d(
    path: str, label_map: bool = False) -> tuple[np.ndarray, tuple[float, float] | None]:
  """Read a 2-D MetaImage; returns (`[H, W]` array, (row_mm, col_mm) or None).

  The array is float32 for images and keeps its dtype for label maps.
  """
  from mask_hybridgnet_jax.io import metaimage  # pylint: disable=import-outside-toplevel

  image = metaimage.read_metaimage(path)
  array = image.array
  spacing = image.spacing
  channels = int(image.header.get("ElementNumberOfChannels", "1"))
  if channels > 1:
    array = _single_component(
        np.moveaxis(array, -1, 0), path, "channels", allow_luma=not label_map)
  if array.ndim == 3 and array.shape[0] == 3 and not _all_equal(array):
    raise ImageReadError(
        f"{path}: 3-D MetaImage of 3 slices that differ; read_image reads only 2-D images. "
        "Use metaimage.read_metaimage for volumes.")
  if array.ndim == 3 and array.shape[0] == 3:
    array = array[0]
  elif array.ndim == 3 and array.shape[0] == 1:
    array = array[0]
  if array.ndim != 2:
    raise ImageReadError(
        f"{path}: MetaImage of shape {image.array.shape} is not a 2-D image; read_image "
        "reads only 2-D images. Use metaimage.read_metaimage for volumes.")
  if spacing is not None:
    spacing = (spacing[-2], spacing[-1])
  return (array if label_map else array.astype(np.float32)), spacing


def _read_nifti_2d(
    path: str, label_map: bool) -> tuple[np.ndarray, tuple[float, float] | None]:
  """Read a 2-D NIfTI image or a volume of one slice; returns (`[H, W]`, (row_mm, col_mm))."""
  from mask_hybridgnet_jax.io import nifti  # pylint: disable=import-outside-toplevel

  volume = nifti.read_nifti(path)
  array = volume.array
  if array.ndim == 3 and array.shape[0] == 1:
    array = array[0]
  if array.ndim != 2:
    raise ImageReadError(
        f"{path}: NIfTI volume of shape {volume.array.shape} ([D, H, W]) is not a 2-D image; "
        "read_image reads only 2-D images. Use nifti.read_nifti for volumes.")
  spacing = (volume.spacing[-2], volume.spacing[-1])
  return (array if label_map else array.astype(np.float32)), spacing


def _read_dicom_2d(path: str) -> tuple[np.ndarray, tuple[float, float] | None]:
  """Read a single-frame DICOM image; returns (float32 `[H, W]`, spacing or None)."""
  from mask_hybridgnet_jax.io import dicom  # pylint: disable=import-outside-toplevel

  image = dicom.read_dicom(path)
  pixels = _single_frame(image.pixels, path)
  return pixels, image.spacing


def _read_dicom_label_map(path: str) -> np.ndarray:
  """Read a single-frame DICOM label map after the modality LUT, without inversion."""
  from mask_hybridgnet_jax.io import dicom  # pylint: disable=import-outside-toplevel

  values = dicom.modality_values(dicom.read_dataset(path), path)
  return _single_frame(values, path)


def _single_frame(pixels: np.ndarray, path: str) -> np.ndarray:
  if pixels.ndim == 3 and pixels.shape[0] == 1:
    return pixels[0]
  if pixels.ndim != 2:
    raise ImageReadError(
        f"{path}: DICOM file with {pixels.shape[0]} frames is not a 2-D image; read_image "
        "reads only 2-D images. Use dicom.read_dicom for multi-frame files.")
  return pixels


def _all_equal(components: np.ndarray) -> bool:
  """Return True when every `components[c]` of a `[C, ...]` array equals `components[0]`."""
  return all(np.array_equal(components[0], component) for component in components[1:])


def _single_component(components: np.ndarray, path: str, kind: str,
                      allow_luma: bool) -> np.ndarray:
  """Reduce `[C, ...]` components to one: the common one, or BT.601 luma for 3 channels."""
  if _all_equal(components):
    return components[0]
  if allow_luma and components.shape[0] == 3:
    return np.tensordot(_LUMA_WEIGHTS, components.astype(np.float64), axes=1).astype(np.float32)
  raise ImageReadError(
      f"{path}: MetaImage with {components.shape[0]} {kind} that differ; expected one "
      "component, or three equal ones for a label map (or an RGB image for read_image).")


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
