"""TFDS builder `jsrt_contours`: JSRT chest X-ray organ contours, without images.

Source: the landmark polygons released with HybridGNet (Gaggion et al., IEEE
TMI 2022) for the JSRT database (Shiraishi et al., AJR 174:71, 2000). The JSRT
images themselves may not be redistributed, so this dataset serves the
mask-to-graph model, which reads organ masks instead of images. Layout (TFDS
`manual_dir`):

  {Train,Val,Test}/landmarks/<id>.npy   332 values: 166 (x, y) points, 1024x1024 frame
  {train,val,test}_files.txt            published split lists, one `<id>.IMG` per line

The points are, in order: right lung 0:44, left lung 44:94, heart 94:120,
right clavicle 120:143, left clavicle 143:166; each organ's polygon is closed
implicitly. Each polygon is filled to a mask of `mask_size` x `mask_size`
pixels (builder option, default 512). The organs overlap (the clavicles
cross the lungs), so each organ keeps its own mask rather than a shared label
map. The stored image is all zeros and the metadata says `has_images: false`,
so only a model that reads masks can train on it. The 166 points, scaled to
the mask frame, are kept per example as `landmarks`: they correspond across
patients and measure correspondence. The splits are the published lists,
not a random split; each image is its own patient.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tensorflow_datasets as tfds

from mask_hybridgnet_jax import contours
from mask_hybridgnet_jax.datasets import common
from mask_hybridgnet_jax.organs import DatasetMetadata, Organ

logger = logging.getLogger(__name__)

LAYOUT = """\
  <manual_dir>/Train/landmarks/<id>.npy   166 (x, y) points in a 1024x1024 frame, flattened
  <manual_dir>/Val/landmarks/<id>.npy
  <manual_dir>/Test/landmarks/<id>.npy
  <manual_dir>/train_files.txt            published split lists, one <id>.IMG per line
  <manual_dir>/val_files.txt
  <manual_dir>/test_files.txt"""

METADATA = DatasetMetadata(organs=(
    Organ("right_lung", 1),
    Organ("left_lung", 2),
    Organ("heart", 3),
    Organ("right_clavicle", 4),
    Organ("left_clavicle", 5),
))

# Landmark index ranges of the organs, in METADATA order.
ORGAN_SLICES = {
    "right_lung": slice(0, 44),
    "left_lung": slice(44, 94),
    "heart": slice(94, 120),
    "right_clavicle": slice(120, 143),
    "left_clavicle": slice(143, 166),
}
NUM_LANDMARKS = 166
LANDMARK_FRAME = 1024
# JSRT films were digitised at 2048x2048 with 0.175 mm pixels (Shiraishi et
# al., 2000), so one pixel of the 1024 frame is 0.35 mm.
FRAME_PIXEL_MM = 0.35
DEFAULT_MASK_SIZE = 512

# Split name -> (folder, list file).
SPLIT_SOURCES = {
    "train": ("Train", "train_files.txt"),
    "validation": ("Val", "val_files.txt"),
    "test": ("Test", "test_files.txt"),
}


class LandmarkFileError(common.SourceRecordError):
  """A landmark file that is not 166 finite (x, y) points."""


@dataclasses.dataclass(eq=False)
class JsrtContoursConfig(common.MaskBuilderConfig):
  """Preparation settings of `jsrt_contours`.

  Attributes:
    mask_size: side of the square masks the polygons are filled into, in
      pixels; the 1024 landmark frame is scaled to it.
  """

  mask_size: int = DEFAULT_MASK_SIZE


def read_landmarks(path: Path) -> np.ndarray:
  """Read one landmark file as float64 `[166, 2]` (x, y) in the 1024 frame.

  Raises:
    LandmarkFileError: unreadable file, wrong number of values, or values
      that are not finite.
  """
  try:
    values = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise LandmarkFileError(f"{path}: cannot read the landmarks ({e}).") from e
  if values.size != 2 * NUM_LANDMARKS:
    raise LandmarkFileError(
        f"{path}: expected {2 * NUM_LANDMARKS} values ({NUM_LANDMARKS} (x, y) points), "
        f"got shape {values.shape}.")
  points = np.asarray(values, np.float64).reshape(-1, 2)
  if not np.all(np.isfinite(points)):
    raise LandmarkFileError(f"{path}: landmarks contain NaN or infinite values.")
  return points


def to_mask_frame(points: np.ndarray, mask_size: int) -> np.ndarray:
  """Map `[P, 2]` points from the 1024 frame to the mask frame (half-pixel centres)."""
  scale = mask_size / LANDMARK_FRAME
  return (np.asarray(points, np.float64) + 0.5) * scale - 0.5


def _read_split_list(path: Path) -> list[str]:
  """Return the ids of a split list, without the `.IMG` suffix."""
  ids = []
  for line in path.read_text(encoding="utf-8").splitlines():
    name = line.strip()
    if name:
      ids.append(name[:-4] if name.upper().endswith(".IMG") else name)
  return ids


class JsrtContours(common.MaskDatasetBuilder):
  """JSRT lung, heart and clavicle contours filled to masks (no images)."""

  name = "jsrt_contours"
  MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT
  HAS_IMAGES = False
  GRAPH_SCALE_FACTOR = 0.05
  BUILDER_CONFIGS = [
      JsrtContoursConfig(name=common.config_name(size), image_size=size)
      for size in (256, 128, 512)
  ]

  @classmethod
  def make_config(
      cls,
      image_size: int,
      skip_degenerate: bool = False,
      split_seed: int = 0,
      split_fractions: Sequence[float] = common.DEFAULT_SPLIT_FRACTIONS,
      mask_size: int = DEFAULT_MASK_SIZE,
      **options: Any,
  ) -> JsrtContoursConfig:
    """Return the config for these settings; `mask_size` is the mask side in pixels.

    Raises:
      ValueError: invalid settings, other options, or a split seed or
        fractions, which do not apply because the split lists are published.
    """
    if options:
      raise ValueError(
          f"Dataset {cls.name!r} has only the builder option mask_size; got {sorted(options)}.")
    if split_seed != 0 or tuple(split_fractions) != common.DEFAULT_SPLIT_FRACTIONS:
      raise ValueError(
          f"{cls.name} uses the published train/validation/test lists, so split_seed and "
          f"split_fractions do not apply; got split_seed={split_seed}, "
          f"split_fractions={tuple(split_fractions)}. Leave them at their defaults.")
    if isinstance(mask_size, bool) or not isinstance(mask_size, (int, np.integer)) or (
        mask_size < 16):
      raise ValueError(f"mask_size must be an integer of at least 16 pixels, got {mask_size!r}.")
    base = super().make_config(image_size, skip_degenerate)
    if mask_size == DEFAULT_MASK_SIZE and isinstance(base, JsrtContoursConfig):
      return base
    name = base.name if mask_size == DEFAULT_MASK_SIZE else f"{base.name}_mask{mask_size}"
    return JsrtContoursConfig(
        name=name,
        image_size=base.image_size,
        skip_degenerate=base.skip_degenerate,
        mask_size=int(mask_size),
    )

  @classmethod
  def extra_features(cls) -> dict[str, tfds.features.FeatureConnector]:
    return {
        # [166, 2] manual landmarks (x, y) in mask-frame pixels, organs in
        # metadata order; point k marks the same anatomical place in every
        # example.
        "landmarks": tfds.features.Tensor(shape=(NUM_LANDMARKS, 2), dtype=np.float32),
    }

  def _dataset_metadata(self, manual_dir: Path) -> DatasetMetadata:
    return METADATA

  def _list_sources(self, manual_dir: Path) -> common.SourceListing:
    list_paths = []
    for split, (folder_name, list_name) in SPLIT_SOURCES.items():
      for required in (manual_dir / folder_name / "landmarks", manual_dir / list_name):
        if not required.exists():
          raise common.DatasetSourceError(
              f"{manual_dir}: {required.relative_to(manual_dir)} not found "
              f"(needed for the {split} split). Expected layout:\n{LAYOUT}")
      list_paths.append(manual_dir / list_name)

    records = []
    skipped: list[dict[str, str]] = []
    for split, (folder_name, list_name) in SPLIT_SOURCES.items():
      folder = manual_dir / folder_name / "landmarks"
      paths, split_skipped = common.index_files(folder, (".npy",), "landmark")
      skipped.extend(split_skipped)
      listed = _read_split_list(manual_dir / list_name)
      for stem in listed:
        if stem not in paths:
          skipped.append({"file": str(manual_dir / list_name),
                          "reason": f"{stem} is listed but {folder_name}/landmarks/{stem}.npy "
                                    "is missing"})
          continue
        records.append(common.SourceRecord(
            example_id=stem,
            patient_id=stem,
            image_path=None,
            mask_path=None,
            extra_paths=(paths[stem],),
            attributes={"split": split},
        ))
      for stem in sorted(set(paths) - set(listed)):
        skipped.append({"file": str(paths[stem]), "reason": f"not listed in {list_name}"})
    for entry in skipped:
      logger.warning("Skipping %s: %s.", entry["file"], entry["reason"])
    return common.SourceListing(
        records=tuple(records), skipped=tuple(skipped), extra_files=tuple(list_paths))

  def assign_splits(
      self, listing: common.SourceListing, patients: Sequence[str],
  ) -> dict[str, tuple[str, ...]]:
    encoded = set(patients)
    splits: dict[str, list[str]] = {split: [] for split in common.SPLITS}
    for record in listing.records:
      if record.patient_id in encoded:
        splits[record.attributes["split"]].append(record.patient_id)
    empty = [split for split, ids in splits.items() if not ids]
    if empty:
      raise ValueError(f"the published split lists leave {empty} without any usable example.")
    return {split: tuple(sorted(ids)) for split, ids in splits.items()}

  def read_record(
      self, record: common.SourceRecord, metadata: DatasetMetadata) -> common.RecordData:
    config: JsrtContoursConfig = self.builder_config
    size = config.mask_size
    points = to_mask_frame(read_landmarks(record.extra_paths[0]), size)
    polygons = {name: points[index] for name, index in ORGAN_SLICES.items()}
    masks = contours.fill_polygons(polygons, metadata.organs, (size, size))
    spacing_mm = FRAME_PIXEL_MM * LANDMARK_FRAME / size
    return common.RecordData(
        image=np.zeros((size, size), np.float32),
        label_map=None,
        organ_masks=masks,
        spacing=(spacing_mm, spacing_mm),
        extra={"landmarks": points.astype(np.float32)},
    )
