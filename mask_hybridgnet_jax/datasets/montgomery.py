"""TFDS builder `montgomery`: Montgomery County chest X-rays with lung label maps.

Source: the NLM Montgomery County tuberculosis screening set (Jaeger et al.,
QIMS 4(6):475, 2014; Candemir et al., IEEE TMI 33(2):577, 2014), in this
layout (TFDS `manual_dir`):

  images/MCUCXR_NNNN_S.png   8-bit grayscale; S is 0 (normal) or 1 (tuberculosis)
  masks/MCUCXR_NNNN_S.png    label map: 0 background, 1 right lung (the patient's
                             right, on the image's left), 2 left lung

A `landmarks/` folder, when present, is ignored: its manual landmarks measure
point correspondence and are never training data. Left/right flips are not
allowed because the two lungs are different organs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from mask_hybridgnet_jax.datasets import common
from mask_hybridgnet_jax.organs import DatasetMetadata, Organ

logger = logging.getLogger(__name__)

LAYOUT = """\
  <manual_dir>/images/MCUCXR_NNNN_S.png  chest X-ray
  <manual_dir>/masks/MCUCXR_NNNN_S.png   label map: 0 background, 1 right lung, 2 left lung"""

METADATA = DatasetMetadata(organs=(Organ("right_lung", 1), Organ("left_lung", 2)))

# The patient id is the file name without the diagnosis suffix.
_FILE_PATTERN = re.compile(r"^(?P<patient>MCUCXR_\d{4})_[01]$")


class Montgomery(common.MaskDatasetBuilder):
  """Montgomery County chest X-rays with right and left lung label maps."""

  name = "montgomery"
  MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT

  def _dataset_metadata(self, manual_dir: Path) -> DatasetMetadata:
    return METADATA

  def _list_sources(self, manual_dir: Path) -> common.SourceListing:
    for required in ("images", "masks"):
      if not (manual_dir / required).is_dir():
        raise common.DatasetSourceError(
            f"{manual_dir}: folder {required}/ not found. Expected layout:\n{LAYOUT}")

    image_paths, skipped = common.index_files(manual_dir / "images", (".png",), "image")
    mask_paths, skipped_masks = common.index_files(manual_dir / "masks", (".png",), "mask")
    skipped.extend(skipped_masks)

    records = []
    for stem in sorted(set(image_paths) | set(mask_paths)):
      path = image_paths.get(stem, mask_paths.get(stem))
      match = _FILE_PATTERN.match(stem)
      if match is None:
        skipped.append({"file": str(path), "reason": "name does not match MCUCXR_NNNN_S.png"})
      elif stem not in mask_paths:
        skipped.append({"file": str(path), "reason": f"no mask masks/{stem}.png"})
      elif stem not in image_paths:
        skipped.append({"file": str(path), "reason": f"no image images/{stem}.png"})
      else:
        # NOTE: no spacing, because these images were resized to 512x512
        # without keeping the aspect ratio of the originals.
        records.append(common.SourceRecord(
            example_id=stem,
            patient_id=match.group("patient"),
            image_path=image_paths[stem],
            mask_path=mask_paths[stem],
        ))
    for entry in skipped:
      logger.warning("Skipping %s: %s.", entry["file"], entry["reason"])
    return common.SourceListing(records=tuple(records), skipped=tuple(skipped))
