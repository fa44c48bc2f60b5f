"""DICOM images read with pydicom, as modality values with MONOCHROME2 polarity.

The pixel values go through the modality LUT (RescaleSlope and
RescaleIntercept, or a Modality LUT Sequence), so CT gives Hounsfield units.
MONOCHROME1 images, where a higher value is displayed darker, are inverted
to `max + min - value` so that every image returned here displays with a
higher value brighter. RGB and YBR colour images become BT.601 luma with a
logged note. Enhanced multi-frame files that keep the rescale and pixel
spacing in their functional group sequences are handled too.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from mask_hybridgnet_jax.io.images import ImageReadError

logger = logging.getLogger(__name__)

# ITU-R BT.601 luma weights for R, G, B (as in `images.read_image`).
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)

# Photometric interpretations whose pixels pydicom 3 returns as RGB: it
# converts YBR data to RGB when it decodes the pixel array.
_COLOUR_PHOTOMETRICS = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


class DicomReadError(ImageReadError):
  """A DICOM file cannot be read or decoded; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class DicomImage:
  """Pixel values and geometry of one DICOM file.

  Attributes:
    pixels: float32 `[H, W]`, or `[T, H, W]` for a multi-frame file, after the
      modality LUT and with MONOCHROME1 inverted.
    spacing: `(row_mm, col_mm)`: the distance between rows, then between
      columns, from PixelSpacing, else ImagerPixelSpacing; None when the file
      has neither.
    slice_position: ImagePositionPatient (x, y, z) in mm of the first
      pixel, or None.
    slice_orientation: ImageOrientationPatient, the row then column
      direction cosines (6 values), or None.
    slice_location: SliceLocation in mm, or None.
    instance_number: InstanceNumber, or None.
    series_uid: SeriesInstanceUID, or None.
    patient_id: PatientID, or None.
    photometric: PhotometricInterpretation as stored in the file.
  """

  pixels: np.ndarray
  spacing: tuple[float, float] | None
  slice_position: tuple[float, float, float] | None
  slice_orientation: tuple[float, ...] | None
  slice_location: float | None
  instance_number: int | None
  series_uid: str | None
  patient_id: str | None
  photometric: str


def read_dicom(path: str | os.PathLike[str]) -> DicomImage:
  """Read one DICOM file as modality values with MONOCHROME2 polarity.

  MONOCHROME1 is inverted with the minimum and maximum of the whole array
  (all frames together), so frames stay comparable.

  Args:
    path: a DICOM Part 10 file (with the 'DICM' marker after its preamble).

  Returns:
    The pixels and the geometry and identifiers needed to stack slices.

  Raises:
    DicomReadError: the file is missing, is not DICOM, has no pixel data,
      is truncated, uses a compressed transfer syntax no installed handler
      decodes, or has an unsupported photometric interpretation.
  """
  path = os.fspath(path)
  dataset = _read_dataset(path)
  pixels = modality_values(dataset, path)
  photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
  if photometric == "MONOCHROME1":
    pixels = pixels.max() + pixels.min() - pixels
  return DicomImage(
      pixels=pixels.astype(np.float32),
      spacing=_pixel_spacing(dataset, path),
      slice_position=_floats(dataset.get("ImagePositionPatient"), 3, "ImagePositionPatient", path),
      slice_orientation=_floats(
          dataset.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path),
      slice_location=_optional_float(dataset.get("SliceLocation")),
      instance_number=_optional_int(dataset.get("InstanceNumber")),
      series_uid=_optional_text(dataset.get("SeriesInstanceUID")),
      patient_id=_optional_text(dataset.get("PatientID")),
      photometric=photometric,
  )


def read_dataset(path: str | os.PathLike[str]) -> Dataset:
  """Read a DICOM file's data set with pydicom, raising DicomReadError on failure."""
  return _read_dataset(os.fspath(path))


def modality_values(dataset: Dataset, path: str) -> np.ndarray:
  """Decode the pixel data and apply the modality LUT; float64 `[H, W]` or `[T, H, W]`.

  Colour images become BT.601 luma. MONOCHROME1 is not inverted here, so
  label maps stored as DICOM keep their values.

  Raises:
    DicomReadError: no pixel data, an undecodable transfer syntax, a
      truncated file or an unsupported photometric interpretation.
  """
  if not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
    raise DicomReadError(
        f"{path}: has no pixel data (no PixelData element); it may be a structured report, "
        "a presentation state or another non-image object.")
  photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
  if photometric not in ("MONOCHROME1", "MONOCHROME2") and photometric not in _COLOUR_PHOTOMETRICS:
    raise DicomReadError(
        f"{path}: photometric interpretation {photometric!r} is not supported; expected "
        "MONOCHROME1, MONOCHROME2, RGB or YBR. Convert the image to grayscale.")

  stored = _decode_pixels(dataset, path)
  frames = int(dataset.get("NumberOfFrames", 1) or 1)
  samples = int(dataset.get("SamplesPerPixel", 1) or 1)
  if photometric in _COLOUR_PHOTOMETRICS:
    values = _to_luma(stored, path, photometric)
  elif samples != 1:
    raise DicomReadError(
        f"{path}: {photometric} image with SamplesPerPixel = {samples}; expected 1.")
  else:
    values = _apply_modality_lut(stored, dataset, frames)
  return values


def _read_dataset(path: str) -> Dataset:
  if not os.path.exists(path):
    raise DicomReadError(f"{path}: file not found.")
  if os.path.isdir(path):
    raise DicomReadError(f"{path}: is a folder, expected a DICOM file.")
  try:
    return pydicom.dcmread(path)
  except InvalidDicomError:
    raise DicomReadError(
        f"{path}: not a DICOM file (no 'DICM' marker after the 128-byte preamble).") from None
  except (OSError, EOFError, ValueError, KeyError, TypeError) as e:
    raise DicomReadError(
        f"{path}: DICOM file cannot be parsed ({type(e).__name__}: {e}); it is truncated or "
        "damaged.") from None


def _decode_pixels(dataset: Dataset, path: str) -> np.ndarray:
  file_meta = getattr(dataset, "file_meta", None)
  syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
  try:
    return dataset.pixel_array
  except (RuntimeError, NotImplementedError) as e:
    if syntax is not None and syntax.is_compressed:
      first_line = str(e).splitlines()[0]
      raise DicomReadError(
          f"{path}: pixel data in transfer syntax {syntax.name} ({syntax}) cannot be "
          f"decoded ({first_line}). Install the matching pixel-data handler for pydicom "
          "(pylibjpeg with pylibjpeg-libjpeg or pylibjpeg-openjpeg, pyjpegls, or "
          "python-gdcm), or decompress the file, e.g. with 'gdcmconv --raw'.") from None
    raise DicomReadError(f"{path}: pixel data cannot be decoded ({e}).") from None
  except (ValueError, EOFError, AttributeError, KeyError, TypeError) as e:
    # pydicom raises ValueError when the pixel data is shorter than Rows x
    # Columns x frames, and AttributeError or KeyError when Rows, Columns or
    # BitsAllocated is missing.
    raise DicomReadError(
        f"{path}: pixel data cannot be read ({type(e).__name__}: {e}); the file is "
        "truncated or lacks image attributes.") from None


def _to_luma(rgb: np.ndarray, path: str, photometric: str) -> np.ndarray:
  """Return one channel when R, G and B are equal, else BT.601 luma; float64."""
  if rgb.shape[-1] != 3:
    raise DicomReadError(
        f"{path}: {photometric} image has {rgb.shape[-1]} samples per pixel; expected 3.")
  if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
    return rgb[..., 0].astype(np.float64)
  logger.info("%s: %s colour image converted to BT.601 luma.", path, photometric)
  return rgb.astype(np.float64) @ _LUMA_WEIGHTS


def _apply_modality_lut(stored: np.ndarray, dataset: Dataset, frames: int) -> np.ndarray:
  """Apply the top-level modality LUT, else the rescale of the functional groups."""
  if "ModalityLUTSequence" in dataset or "RescaleSlope" in dataset or "RescaleIntercept" in dataset:
    return np.asarray(apply_modality_lut(stored, dataset), dtype=np.float64)

  values = stored.astype(np.float64)
  if frames > 1:
    for frame in range(frames):
      slope, intercept = _functional_group_rescale(dataset, frame)
      values[frame] = values[frame] * slope + intercept
  else:
    slope, intercept = _functional_group_rescale(dataset, 0)
    values = values * slope + intercept
  return values


def _functional_group_rescale(dataset: Dataset, frame: int) -> tuple[float, float]:
  """Return (slope, intercept) for one frame of an enhanced multi-frame file; (1, 0) if none."""
  item = _functional_group_item(dataset, "PixelValueTransformationSequence", frame)
  if item is None:
    return 1.0, 0.0
  return float(item.get("RescaleSlope", 1.0)), float(item.get("RescaleIntercept", 0.0))


def _functional_group_item(dataset: Dataset, sequence: str, frame: int) -> Dataset | None:
  """Return the first item of `sequence` for `frame`: per-frame groups first, then shared."""
  per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
  if per_frame is not None and frame < len(per_frame):
    items = per_frame[frame].get(sequence)
    if items:
      return items[0]
  shared = dataset.get("SharedFunctionalGroupsSequence")
  if shared:
    items = shared[0].get(sequence)
    if items:
      return items[0]
  return None


def _pixel_spacing(dataset: Dataset, path: str) -> tuple[float, float] | None:
  spacing = dataset.get("PixelSpacing")
  if spacing is None:
    measures = _functional_group_item(dataset, "PixelMeasuresSequence", 0)
    if measures is not None:
      spacing = measures.get("PixelSpacing")
  if spacing is not None:
    return _floats(spacing, 2, "PixelSpacing", path)
  imager_spacing = dataset.get("ImagerPixelSpacing")
  if imager_spacing is not None:
    logger.info(
        "%s: no PixelSpacing; using ImagerPixelSpacing %s mm, measured at the detector, "
        "which overstates sizes in the patient by the geometric magnification.",
        path, list(imager_spacing))
    return _floats(imager_spacing, 2, "ImagerPixelSpacing", path)
  logger.warning(
      "%s: neither PixelSpacing nor ImagerPixelSpacing is set; distances are in pixels.", path)
  return None


def _floats(value, count: int, keyword: str, path: str) -> tuple[float, ...] | None:
  """Convert a multi-valued element to `count` floats; None when absent."""
  if value is None or value == "":
    return None
  items = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
  if len(items) != count:
    raise DicomReadError(
        f"{path}: {keyword} has {len(items)} values {items}; expected {count}.")
  numbers = tuple(float(item) for item in items)
  if keyword.endswith("PixelSpacing") and not all(number > 0 for number in numbers):
    raise DicomReadError(f"{path}: {keyword} {list(numbers)} must be positive.")
  return numbers


def _optional_float(value) -> float | None:
  return None if value is None or value == "" else float(value)


def _optional_int(value) -> int | None:
  return None if value is None or value == "" else int(value)


def _optional_text(value) -> str | None:
  return None if value is None or str(value) == "" else str(value)
