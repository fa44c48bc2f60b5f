"""NIfTI (`.nii`, `.nii.gz`) images and label maps, read with nibabel.

Axis convention: NIfTI stores voxels with indices (i, j, k). This reader
returns `array[k, j, i]`: one slice per k, image row = j and image column =
i, so slice k is `data[:, :, k].T` in nibabel's array. No axis is flipped or
reordered from the affine. For an axial volume stored as RAS+, rows then run
posterior to anterior and columns run patient left to right, which is
mirrored and upside down compared with the radiological display that
clinical viewers use. `Volume.orientation` gives the anatomical direction
in which each of i, j and k increases (nibabel's axis codes), so callers can
flip axes when the display matters. Segmentation masks read the same way
stay aligned with their images.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import zlib

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from mask_hybridgnet_jax.io.images import ImageReadError

logger = logging.getLogger(__name__)

# Millimetres per NIfTI spatial unit (the xyzt_units field).
_MM_PER_UNIT = {"mm": 1.0, "meter": 1000.0, "micron": 0.001}

# Errors nibabel and its decompressors raise for truncated or corrupt files.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, ImageFileError)


class NiftiReadError(ImageReadError):
  """A NIfTI file is missing, invalid, truncated or has an unsupported shape."""


@dataclasses.dataclass(frozen=True)
class Volume:
  """Voxels of one NIfTI file with their spacing.

  Attributes:
    array: `[D, H, W]` for a 3-D file (`array[k, j, i]`) or `[H, W]` for a
      2-D file (`array[j, i]`). Integer files without intensity scaling keep
      their integer dtype (label maps stay exact); all others are float32.
    spacing: voxel size in mm in the axis order of `array`: `(slice_mm,
      row_mm, col_mm)` for 3-D, `(row_mm, col_mm)` for 2-D.
    orientation: anatomical direction in which i, j and k increase, from
      the affine (e.g. `('R', 'A', 'S')`); the entry for an axis is None
      when the affine is degenerate.
    affine: `[4, 4]` voxel (i, j, k) to world (mm) transform from the file.
  """

  array: np.ndarray
  spacing: tuple[float, ...]
  orientation: tuple[str | None, ...]
  affine: np.ndarray


def read_nifti(path: str | os.PathLike[str]) -> Volume:
  """Read a 2-D or 3-D NIfTI-1 or NIfTI-2 file (`.nii` or `.nii.gz`).

  Intensity scaling (`scl_slope`, `scl_inter`) is applied. A 4-D or higher
  file is accepted only when every axis after the third has size 1.

  Args:
    path: the NIfTI file.

  Returns:
    The voxel array with slices first, its spacing in mm and orientation.

  Raises:
    NiftiReadError: the file is missing, is not NIfTI, is truncated, or has
      a time or other non-spatial axis longer than 1.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise NiftiReadError(f"{path}: file not found.")
  if os.path.isdir(path):
    raise NiftiReadError(f"{path}: is a folder, expected a NIfTI file.")
  try:
    image = nib.load(path, mmap=False)
  except _READ_ERRORS as e:
    raise NiftiReadError(
        f"{path}: not a readable NIfTI file ({type(e).__name__}: {e}).") from None
  if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
    raise NiftiReadError(
        f"{path}: nibabel reads it as {type(image).__name__}, not as NIfTI. Convert it to "
        ".nii or .nii.gz.")

  shape = image.shape
  if len(shape) > 3 and any(size != 1 for size in shape[3:]):
    raise NiftiReadError(
        f"{path}: has shape {shape}; only 2-D and 3-D volumes can be read, and axes after "
        "the third must have size 1. Split a time series into one file per time point.")
  if len(shape) < 2:
    raise NiftiReadError(f"{path}: has shape {shape}; expected a 2-D or 3-D image.")

  try:
    data = np.asanyarray(image.dataobj)
  except _READ_ERRORS as e:
    raise NiftiReadError(
        f"{path}: voxel data cannot be read ({type(e).__name__}: {e}); the file is "
        "truncated or damaged.") from None
  data = data.reshape(shape[:3])
  if not np.issubdtype(data.dtype, np.integer):
    data = data.astype(np.float32)

  spatial_axes = data.ndim
  array = np.ascontiguousarray(np.transpose(data, tuple(reversed(range(spatial_axes)))))
  zooms_ijk = _zooms_mm(image, spatial_axes, path)
  orientation = nib.orientations.aff2axcodes(image.affine)[:spatial_axes]
  return Volume(
      array=array,
      spacing=tuple(reversed(zooms_ijk)),
      orientation=tuple(orientation),
      affine=np.asarray(image.affine, dtype=np.float64),
  )


def _zooms_mm(image: nib.Nifti1Image, spatial_axes: int, path: str) -> tuple[float, ...]:
  """Return the voxel size in mm along i, j (and k) from the header."""
  zooms = tuple(float(zoom) for zoom in image.header.get_zooms()[:spatial_axes])
  unit, _ = image.header.get_xyzt_units()
  if unit in _MM_PER_UNIT:
    scale = _MM_PER_UNIT[unit]
  else:
    # The NIfTI standard leaves the unit open when xyzt_units is 0; mm is
    # what scanners and converters write.
    logger.info("%s: spatial unit is %r; reading voxel sizes as mm.", path, unit)
    scale = 1.0
  if not all(zoom > 0 and np.isfinite(zoom) for zoom in zooms):
    raise NiftiReadError(
        f"{path}: voxel sizes (pixdim) {zooms} must be finite and positive. Fix the header, "
        "e.g. with nibabel's header.set_zooms.")
  return tuple(zoom * scale for zoom in zooms)
