"""TFDS builder `mask_folder`: any dataset of images and organ label maps.

The source folder (TFDS `manual_dir`) holds:

  images/<stem>.<png|jpg|jpeg|tif|tiff|bmp>
  masks/<stem>.png          label map, 0 background, organ labels as in metadata.json
  metadata.json             {"organs": [{"name": "right_lung", "label": 1}, ...],
                             "allow_horizontal_flip": false, ...}
  spacing.csv (optional)    header `stem,row_mm,col_mm`, one row per image

Each image is its own patient (patient id = stem).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

from mask_hybridgnet_jax.datasets import common
from mask_hybridgnet_jax.io.images import IMAGE_SUFFIXES
from mask_hybridgnet_jax.organs import DatasetMetadata

logger = logging.getLogger(__name__)

LAYOUT = """\
  <manual_dir>/images/<stem>.png (or .jpg, .jpeg, .tif, .tiff, .bmp)
  <manual_dir>/masks/<stem>.png   label map with the organ labels of metadata.json
  <manual_dir>/metadata.json      {"organs": [{"name": "liver", "label": 1}], "allow_horizontal_flip": false}
  <manual_dir>/spacing.csv        optional, columns stem,row_mm,col_mm"""

SPACING_COLUMNS = ("stem", "row_mm", "col_mm")


def read_spacing_csv(path: Path) -> dict[str, tuple[float, float]]:
  """Read `stem,row_mm,col_mm` rows into stem -> (row_mm, col_mm).

  Raises:
    common.DatasetSourceError: missing columns, a repeated stem, or a spacing
      that is not a positive finite number.
  """
  spacing = {}
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    columns = [c.strip() for c in reader.fieldnames or ()]
    if set(columns) != set(SPACING_COLUMNS):
      raise common.DatasetSourceError(
          f"{path}: expected the header {','.join(SPACING_COLUMNS)}, got {','.join(columns)}.")
    for line_number, row in enumerate(reader, start=2):
      row = {key.strip(): (value or "").strip() for key, value in row.items() if key is not None}
      stem = row["stem"]
      try:
        values = (float(row["row_mm"]), float(row["col_mm"]))
      except (TypeError, ValueError):
        values = (math.nan, math.nan)
      if not all(math.isfinite(v) and v > 0 for v in values):
        raise common.DatasetSourceError(
            f"{path}, line {line_number}: spacing of {stem!r} must be two positive "
            f"numbers in mm, got row_mm={row['row_mm']!r}, col_mm={row['col_mm']!r}.")
      if stem in spacing:
        raise common.DatasetSourceError(f"{path}, line {line_number}: stem {stem!r} repeated.")
      spacing[stem] = values
  return spacing


class MaskFolder(common.MaskDatasetBuilder):
  """Images and organ label maps from a local folder."""

  name = "mask_folder"
  MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT

  def _dataset_metadata(self, manual_dir: Path) -> DatasetMetadata:
    return DatasetMetadata.load(manual_dir / "metadata.json")

  def _list_sources(self, manual_dir: Path) -> common.SourceListing:
    for required in ("images", "masks", "metadata.json"):
      if not (manual_dir / required).exists():
        raise common.DatasetSourceError(
            f"{manual_dir}: {required} not found. Expected layout:\n{LAYOUT}")

    image_paths, skipped = common.index_files(manual_dir / "images", IMAGE_SUFFIXES, "image")
    mask_paths, skipped_masks = common.index_files(manual_dir / "masks", (".png",), "mask")
    skipped.extend(skipped_masks)

    extra_files = [manual_dir / "metadata.json"]
    spacing = {}
    spacing_path = manual_dir / "spacing.csv"
    if spacing_path.exists():
      spacing = read_spacing_csv(spacing_path)
      extra_files.append(spacing_path)
      unknown = sorted(set(spacing) - set(image_paths))
      if unknown:
        logger.warning("%s: %d stems have no image, e.g. %s.", spacing_path, len(unknown), unknown[:5])
      without = sorted(set(image_paths) - set(spacing))
      if without:
        logger.warning(
            "%s: %d images have no spacing and are measured in pixels, e.g. %s.",
            spacing_path, len(without), without[:5])

    records = []
    for stem in sorted(set(image_paths) | set(mask_paths)):
      if stem not in mask_paths:
        skipped.append({"file": str(image_paths[stem]), "reason": f"no mask masks/{stem}.png"})
        continue
      if stem not in image_paths:
        skipped.append({
            "file": str(mask_paths[stem]),
            "reason": f"no image images/{stem}.* with a suffix in {list(IMAGE_SUFFIXES)}",
        })
        continue
      records.append(common.SourceRecord(
          example_id=stem,
          patient_id=stem,
          image_path=image_paths[stem],
          mask_path=mask_paths[stem],
          spacing=spacing.get(stem),
      ))
    for entry in skipped:
      logger.warning("Skipping %s: %s.", entry["file"], entry["reason"])
    return common.SourceListing(
        records=tuple(records), skipped=tuple(skipped), extra_files=tuple(extra_files))
