"""TFDS builder `hc18`: fetal head ultrasound with head outlines (HC18 challenge).

Source: the HC18 grand-challenge training set (van den Heuvel et al., PLoS ONE
13(8):e0200412, 2018; zenodo record 1327317, CC BY 4.0), in its distributed
layout (TFDS `manual_dir`):

  training_set/NNN_HC.png              8-bit grayscale ultrasound image
  training_set/NNN_HC_Annotation.png   the head outline drawn as a 1-px ellipse (0/255)
  training_set_pixel_size_and_HC.csv   filename, pixel size(mm), head circumference (mm)

`NNN_2HC.png` is a second image of the patient of `NNN_HC.png`, so both land
in the same split. The outline is filled to a mask of the organ `fetal_head`.
When the outline runs off the image edge, hole filling finds no interior.
The mask is then the ellipse fitted to the outline pixels, clipped to the
image. Each example keeps the pixel size (as isotropic spacing) and the
reference head circumference in mm. Ultrasound heads may appear at any
orientation, so flips and transposes are allowed.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from scipy import ndimage
from skimage.measure import EllipseModel

from mask_hybridgnet_jax.datasets import common
from mask_hybridgnet_jax.io import images
from mask_hybridgnet_jax.organs import DatasetMetadata, Organ

logger = logging.getLogger(__name__)

LAYOUT = """\
  <manual_dir>/training_set/NNN_HC.png              fetal head ultrasound (NNN_2HC.png: second image)
  <manual_dir>/training_set/NNN_HC_Annotation.png   head outline, a 1-px ellipse (0/255)
  <manual_dir>/training_set_pixel_size_and_HC.csv   filename,pixel size(mm),head circumference (mm)
Download training_set.zip and training_set_pixel_size_and_HC.csv from
https://zenodo.org/record/1327317 and unpack the zip into <manual_dir>."""

METADATA = DatasetMetadata(
    organs=(Organ("fetal_head", 1),),
    allow_horizontal_flip=True,
    allow_vertical_flip=True,
    allow_transpose=True,
)

CSV_NAME = "training_set_pixel_size_and_HC.csv"
IMAGE_FOLDER = "training_set"

# `NNN_HC` or `NNN_2HC`; the patient is NNN.
_IMAGE_PATTERN = re.compile(r"^(?P<patient>\d+)_(?P<repeat>\d*)HC$")

# Mean distance (px) from the outline pixels to the fitted ellipse above
# which the outline is not taken to be an ellipse.
MAX_MEAN_FIT_RESIDUAL_PX = 2.0


class OutlineError(common.SourceRecordError):
  """An annotation that is empty or not an ellipse outline."""


def read_pixel_size_csv(path: Path) -> dict[str, tuple[float, float]]:
  """Read the HC18 CSV into image file name -> (pixel size mm, head circumference mm).

  Raises:
    common.DatasetSourceError: a header other than the HC18 one, a repeated
      file name, or a value that is not a positive finite number.
  """
  table = {}
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.reader(f)
    header = [column.strip().lower() for column in next(reader, [])]
    if len(header) != 3 or header[0] != "filename" or "pixel size" not in header[1]:
      raise common.DatasetSourceError(
          f"{path}: expected the header 'filename,pixel size(mm),head circumference (mm)', "
          f"got {','.join(header)!r}.")
    for line_number, row in enumerate(reader, start=2):
      if not row or all(not value.strip() for value in row):
        continue
      if len(row) != 3:
        raise common.DatasetSourceError(
            f"{path}, line {line_number}: expected 3 values, got {len(row)}: {row}.")
      name = row[0].strip()
      try:
        values = (float(row[1]), float(row[2]))
      except ValueError:
        values = (math.nan, math.nan)
      if not all(math.isfinite(v) and v > 0 for v in values):
        raise common.DatasetSourceError(
            f"{path}, line {line_number}: pixel size and head circumference of {name!r} "
            f"must be positive numbers in mm, got {row[1]!r} and {row[2]!r}.")
      if name in table:
        raise common.DatasetSourceError(f"{path}, line {line_number}: {name!r} repeated.")
      table[name] = values
  return table


def fit_outline_ellipse(outline: np.ndarray, source: str = "outline") -> EllipseModel:
  """Fit an ellipse to the pixel centres of an outline by least squares.

  Uses the direct least-squares conic fit of scikit-image's `EllipseModel`
  (Halir and Flusser, 1998) on the `(x, y)` = (column, row) centres.

  Raises:
    OutlineError: the fit fails, or the mean distance from the outline
      pixels to the ellipse exceeds MAX_MEAN_FIT_RESIDUAL_PX.
  """
  rows, cols = np.nonzero(outline)
  xy = np.stack([cols, rows], axis=1).astype(np.float64)
  if len(xy) < 5:
    raise OutlineError(
        f"{source}: the outline has {len(xy)} pixels, but an ellipse fit needs at least 5.")
  model = EllipseModel.from_estimate(xy)
  if not model:
    raise OutlineError(f"{source}: fitting an ellipse to the outline failed ({model}).")
  residual = float(np.mean(np.abs(model.residuals(xy))))
  if residual > MAX_MEAN_FIT_RESIDUAL_PX:
    raise OutlineError(
        f"{source}: the outline pixels lie {residual:.1f} px from the fitted ellipse on "
        f"average (at most {MAX_MEAN_FIT_RESIDUAL_PX} px allowed), so it is not an ellipse "
        "outline. Check the annotation file.")
  return model


def rasterize_ellipse(model: EllipseModel, shape: tuple[int, int]) -> np.ndarray:
  """Return bool `[H, W]`: pixel centres inside the ellipse grown by half a pixel.

  Growing both semi-axes by 0.5 px makes the mask include the outline
  pixels, whose centres lie on the ellipse, as hole filling does.
  """
  center_x, center_y = model.center
  semi_a, semi_b = (float(v) + 0.5 for v in model.axis_lengths)
  rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
  dx = cols - center_x
  dy = rows - center_y
  cos, sin = math.cos(model.theta), math.sin(model.theta)
  along = dx * cos + dy * sin
  across = -dx * sin + dy * cos
  return (along / semi_a) ** 2 + (across / semi_b) ** 2 <= 1.0


def outline_to_mask(outline: np.ndarray, source: str = "outline") -> tuple[np.ndarray, bool]:
  """Fill a closed outline, or rasterise the ellipse fitted to an open one.

  Args:
    outline: bool `[H, W]`, True on the drawn outline.
    source: file name for messages.

  Returns:
    (bool `[H, W]` mask including the outline pixels, True when hole
    filling closed the outline and False when the fitted ellipse was used).

  Raises:
    OutlineError: empty outline, or an open outline that is not an ellipse.
  """
  outline = np.asarray(outline, bool)
  if not outline.any():
    raise OutlineError(f"{source}: the annotation is empty (no outline pixel).")
  filled = ndimage.binary_fill_holes(outline)
  if np.any(filled & ~outline):
    return filled, True
  # An outline that leaves the image encloses nothing, because the region
  # outside the image counts as background.
  model = fit_outline_ellipse(outline, source)
  return rasterize_ellipse(model, outline.shape) | outline, False


class HC18(common.MaskDatasetBuilder):
  """HC18 fetal head ultrasound, head outlines filled to masks."""

  name = "hc18"
  MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT

  @classmethod
  def extra_features(cls) -> dict[str, tfds.features.FeatureConnector]:
    return {
        # Reference head circumference from the CSV, in mm.
        "head_circumference_mm": tfds.features.Tensor(shape=(), dtype=np.float32),
        # False when the outline ran off the image and the mask is a fitted ellipse.
        "outline_closed": tfds.features.Tensor(shape=(), dtype=np.bool_),
    }

  def _dataset_metadata(self, manual_dir: Path) -> DatasetMetadata:
    return METADATA

  def _list_sources(self, manual_dir: Path) -> common.SourceListing:
    folder = manual_dir / IMAGE_FOLDER
    csv_path = manual_dir / CSV_NAME
    for required in (folder, csv_path):
      if not required.exists():
        raise common.DatasetSourceError(
            f"{manual_dir}: {required.name} not found. Expected layout:\n{LAYOUT}")
    table = read_pixel_size_csv(csv_path)

    paths, skipped = common.index_files(folder, (".png",), "image")
    records = []
    for stem in sorted(paths):
      if stem.endswith("_Annotation"):
        if stem[:-len("_Annotation")] not in paths:
          skipped.append({"file": str(paths[stem]),
                          "reason": f"no image {stem[:-len('_Annotation')]}.png"})
        continue
      match = _IMAGE_PATTERN.match(stem)
      annotation = f"{stem}_Annotation"
      if match is None:
        skipped.append({"file": str(paths[stem]),
                        "reason": "name does not match NNN_HC.png or NNN_2HC.png"})
      elif annotation not in paths:
        skipped.append({"file": str(paths[stem]), "reason": f"no outline {annotation}.png"})
      elif f"{stem}.png" not in table:
        skipped.append({"file": str(paths[stem]), "reason": f"no row in {CSV_NAME}"})
      else:
        pixel_size, circumference = table[f"{stem}.png"]
        records.append(common.SourceRecord(
            example_id=stem,
            patient_id=match.group("patient"),
            image_path=paths[stem],
            mask_path=paths[annotation],
            spacing=(pixel_size, pixel_size),
            attributes={"head_circumference_mm": circumference},
        ))
    unused_rows = len(set(table) - {f"{r.example_id}.png" for r in records})
    if unused_rows:
      logger.info("%s: %d rows name images that are not in %s.", csv_path, unused_rows, folder)
    for entry in skipped:
      logger.warning("Skipping %s: %s.", entry["file"], entry["reason"])
    return common.SourceListing(
        records=tuple(records), skipped=tuple(skipped), extra_files=(csv_path,))

  def read_record(
      self, record: common.SourceRecord, metadata: DatasetMetadata) -> common.RecordData:
    image = images.read_image(record.image_path)
    outline = images.read_label_map(record.mask_path) > 0
    if image.shape != outline.shape:
      raise common.ImageSizeMismatchError(
          f"{record.mask_path}: outline is {outline.shape[0]}x{outline.shape[1]} (HxW) but "
          f"image {record.image_path} is {image.shape[0]}x{image.shape[1]}; both must have "
          "the same size.")
    mask, closed = outline_to_mask(outline, str(record.mask_path))
    if not closed:
      logger.info("%s: the outline runs off the image; using the fitted ellipse.",
                  record.mask_path)
    return common.RecordData(
        image=image,
        label_map=mask.astype(np.int32) * metadata.organs[0].label,
        spacing=record.spacing,
        extra={
            "head_circumference_mm": np.float32(record.attributes["head_circumference_mm"]),
            "outline_closed": np.bool_(closed),
        },
    )
