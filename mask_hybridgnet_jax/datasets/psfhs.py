"""TFDS builder `psfhs`: intrapartum ultrasound, pubic symphysis and fetal head.

Source: the PSFHS dataset (Chen et al., Scientific Data, 2024, doi
10.1038/s41597-024-03266-4; CC BY 4.0 as published with the dataset), in its
distributed layout (TFDS `manual_dir`):

  image_mha/NNNNN.mha   MetaImage, 256x256 uint8; 3 equal channels (stored as
                        3 slices) read as one grayscale image
  label_mha/NNNNN.mha   MetaImage label map: 0 background, 1 pubic symphysis,
                        2 fetal head

The MetaImage headers give a spacing of 1 in every axis, which is a
placeholder rather than a physical size, so the builder ignores it: examples
have no spacing and distances are in pixels. Each image is its own patient. Vertical flips and
transposes are not allowed, because the probe is always above the pubic
symphysis and the fetal head. Mirroring left/right keeps that anatomy valid.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from mask_hybridgnet_jax.datasets import common
from mask_hybridgnet_jax.organs import DatasetMetadata, Organ

logger = logging.getLogger(__name__)

LAYOUT = """\
  <manual_dir>/image_mha/NNNNN.mha   ultrasound image (MetaImage)
  <manual_dir>/label_mha/NNNNN.mha   label map: 0 background, 1 pubic symphysis, 2 fetal head"""

METADATA = DatasetMetadata(
    organs=(Organ("pubic_symphysis", 1), Organ("fetal_head", 2)),
    allow_horizontal_flip=True,
)

_FILE_PATTERN = re.compile(r"^\d+$")


class Psfhs(common.MaskDatasetBuilder):
  """PSFHS intrapartum ultrasound with pubic symphysis and fetal head label maps."""

  name = "psfhs"
  MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT

  def _dataset_metadata(self, manual_dir: Path) -> DatasetMetadata:
    return METADATA

  def _list_sources(self, manual_dir: Path) -> common.SourceListing:
    for required in ("image_mha", "label_mha"):
      if not (manual_dir / required).is_dir():
        raise common.DatasetSourceError(
            f"{manual_dir}: folder {required}/ not found. Expected layout:\n{LAYOUT}")

    image_paths, skipped = common.index_files(manual_dir / "image_mha", (".mha",), "image")
    label_paths, skipped_labels = common.index_files(
        manual_dir / "label_mha", (".mha",), "label map")
    skipped.extend(skipped_labels)

    records = []
    for stem in sorted(set(image_paths) | set(label_paths)):
      path = image_paths.get(stem, label_paths.get(stem))
      if _FILE_PATTERN.match(stem) is None:
        skipped.append({"file": str(path), "reason": "name does not match NNNNN.mha"})
      elif stem not in label_paths:
        skipped.append({"file": str(path), "reason": f"no label map label_mha/{stem}.mha"})
      elif stem not in image_paths:
        skipped.append({"file": str(path), "reason": f"no image image_mha/{stem}.mha"})
      else:
        records.append(common.SourceRecord(
            example_id=stem,
            patient_id=stem,
            image_path=image_paths[stem],
            mask_path=label_paths[stem],
        ))
    for entry in skipped:
      logger.warning("Skipping %s: %s.", entry["file"], entry["reason"])
    return common.SourceListing(records=tuple(records), skipped=tuple(skipped))
