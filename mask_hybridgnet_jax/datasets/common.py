"""Shared machinery of the organ-mask TFDS builders.

A concrete builder lists its source files (`SourceListing`) and its organs
(`DatasetMetadata`). `MaskDatasetBuilder` then reads every record once
(`read_record`: an image file and a label map file unless the builder
overrides it),
encodes the examples, splits the patients deterministically into
train/validation/test and stores the statistics that fix graph sizes and
padding in `builder.info.metadata`. Datasets are written as `array_record` and
read back with `read_split`, without TensorFlow and without network access.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from mask_hybridgnet_jax import contours
from mask_hybridgnet_jax import preprocess
from mask_hybridgnet_jax.io import images
from mask_hybridgnet_jax.organs import DatasetMetadata

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
DEFAULT_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
# Padded point sets get a size that is a multiple of this, so that a few more
# boundary pixels in a new dataset rarely change the shapes seen by jit.
POINTS_BUDGET_MULTIPLE = 128
FILE_FORMAT = "array_record"
# Keys of `builder.info.metadata` that together form the `DatasetMetadata`.
_METADATA_KEYS = ("organs", "allow_horizontal_flip", "allow_vertical_flip", "allow_transpose")


class DatasetSourceError(ValueError):
  """Missing or unusable source folder. The message names it and its layout."""


class ImageSizeMismatchError(ValueError):
  """Image and label map of one example differ in size."""


class PreparedDatasetMismatchError(ValueError):
  """A prepared dataset was built from different source files."""


class SourceRecordError(ValueError):
  """One source record cannot be read; the builder skips it and reports why."""


@dataclasses.dataclass(frozen=True)
class SourceRecord:
  """One image and its label map, before reading.

  Attributes:
    example_id: unique id of the example, also its TFDS key.
    patient_id: examples of one patient always land in the same split.
    image_path: image file; None for a dataset without images.
    mask_path: label map file; None when the builder makes
      the masks from other files, such as contour text files.
    spacing: pixel size (row_mm, col_mm) of the original image, if known.
    extra_paths: other files this example is read from (contours, landmarks).
      They enter the source fingerprint.
    attributes: values found while listing (a reference measurement, a
      published split) that the builder's `read_record` uses.
  """

  example_id: str
  patient_id: str
  image_path: Path | None
  mask_path: Path | None
  spacing: tuple[float, float] | None = None
  extra_paths: tuple[Path, ...] = ()
  attributes: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def source(self) -> str:
    """The first file of the record, to name it in messages."""
    for path in (self.image_path, self.mask_path, *self.extra_paths):
      if path is not None:
        return str(path)
    return self.example_id

  def paths(self) -> tuple[Path, ...]:
    """Return every file the record is read from."""
    listed = (self.image_path, self.mask_path, *self.extra_paths)
    return tuple(path for path in listed if path is not None)


@dataclasses.dataclass
class RecordData:
  """One source record after reading, before encoding.

  Attributes:
    image: float32 `[H, W]` intensities in the file's own range.
    label_map: integer `[H, W]`, 0 background, organ labels elsewhere; None
      when `organ_masks` is given.
    spacing: (row_mm, col_mm), or None when the source gives no physical size.
    extra: values of the builder's `extra_features`, keyed by feature name.
    organ_masks: bool `[O, H, W]` in metadata order, for organs that overlap
      and so cannot share one label map; used instead of `label_map`.
  """

  image: np.ndarray
  label_map: np.ndarray | None
  spacing: tuple[float, float] | None = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)
  organ_masks: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class SourceListing:
  """Source files found by a builder in its folder.

  Attributes:
    records: image/label-map pairs to encode.
    skipped: files left out, each `{"file": path, "reason": text}`.
    extra_files: other files whose content defines the dataset (metadata,
      spacing tables). They enter the source fingerprint.
  """

  records: tuple[SourceRecord, ...]
  skipped: tuple[dict[str, str], ...] = ()
  extra_files: tuple[Path, ...] = ()


@dataclasses.dataclass(eq=False)
class MaskBuilderConfig(tfds.core.BuilderConfig):
  """Preparation settings. Each combination is stored under its own name.

  Attributes:
    image_size: side S of the square network input, in pixels.
    skip_degenerate: treat a degenerate organ mask (zero area) as absent
      instead of raising an error.
    split_seed: seed of the patient permutation that defines the splits.
    split_fractions: fractions of patients in train, validation and test.
  """

  image_size: int = 256
  skip_degenerate: bool = False
  split_seed: int = 0
  split_fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS


def config_name(
    image_size: int,
    skip_degenerate: bool = False,
    split_seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
) -> str:
  """Return the config name, e.g. "size256" or "size128_seed3_skipdegenerate"."""
  name = f"size{image_size}"
  if split_seed != 0:
    name += f"_seed{split_seed}"
  if tuple(split_fractions) != DEFAULT_SPLIT_FRACTIONS:
    percents = "-".join(format(100 * f, "g").replace(".", "p") for f in split_fractions)
    name += f"_split{percents}"
  if skip_degenerate:
    name += "_skipdegenerate"
  return name


def _validate_settings(
    image_size: int, split_seed: int, split_fractions: Sequence[float]) -> None:
  if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
    raise ValueError(f"image_size must be a positive integer, got {image_size!r}.")
  if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) or split_seed < 0:
    raise ValueError(f"split_seed must be a non-negative integer, got {split_seed!r}.")
  validate_split_fractions(split_fractions)


def validate_split_fractions(fractions: Sequence[float]) -> None:
  """Raise ValueError unless there are three positive fractions summing to 1."""
  if len(fractions) != len(SPLITS):
    raise ValueError(
        f"split fractions must give one value for each of {SPLITS}, got {tuple(fractions)}.")
  if any(not f > 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
    raise ValueError(
        f"split fractions must be positive and sum to 1, got {tuple(fractions)}.")


# ----------------------------------------------------------------------------
# Patient-level split.


def split_patients(
    patient_ids: Sequence[str],
    seed: int,
    fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
) -> dict[str, tuple[str, ...]]:
  """Assign every patient to one split, deterministically.

  The unique patient ids are sorted, permuted with
  `np.random.default_rng(seed)`, and cut at `round(n * cumulative fraction)`
  (halves round up). The cuts are then moved, if needed, so that every split
  contains at least one patient.

  Args:
    patient_ids: patient id of every example; repeats are allowed.
    seed: seed of the permutation.
    fractions: fractions for train, validation and test.

  Returns:
    split name -> sorted tuple of patient ids.

  Raises:
    ValueError: fewer than three distinct patients, or invalid fractions.
  """
  validate_split_fractions(fractions)
  unique = sorted(set(patient_ids))
  n = len(unique)
  if n < len(SPLITS):
    raise ValueError(
        f"A patient-level split into {SPLITS} needs at least 3 distinct patients, "
        f"found {n}: {unique}. Add images of more patients.")
  order = np.random.default_rng(seed).permutation(n)
  shuffled = [unique[i] for i in order]

  first_cut = int(math.floor(n * fractions[0] + 0.5))
  second_cut = int(math.floor(n * (fractions[0] + fractions[1]) + 0.5))
  first_cut = min(max(first_cut, 1), n - 2)
  second_cut = min(max(second_cut, first_cut + 1), n - 1)
  parts = (shuffled[:first_cut], shuffled[first_cut:second_cut], shuffled[second_cut:])
  return {split: tuple(sorted(part)) for split, part in zip(SPLITS, parts)}


# ----------------------------------------------------------------------------
# Example encoding.


def example_features(
    image_size: int,
    extra_features: Mapping[str, tfds.features.FeatureConnector] | None = None,
) -> tfds.features.FeaturesDict:
  """Return the stored features; O organs, S input size, T points in total.

  `masks` and `masks_original` are zlib-compressed because their organ count
  and original size vary between datasets and images. `extra_features` adds
  dataset-specific fields (a reference measurement, a slice position); the
  common fields stay the same for every builder, so datasets prepared before
  any extra field existed still decode.

  Raises:
    ValueError: an extra feature reuses the name of a common one.
  """
  features = {
      # [S, S] in [0, 1], padded to a centred square and resized.
      "image": tfds.features.Tensor(shape=(image_size, image_size), dtype=np.float32),
      # [O, S, S] in {0, 1}.
      "masks": tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8, encoding="zlib"),
      # [T, 2] normalised (x, y), organs concatenated in metadata order.
      "points": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
      # [O] number of points of each organ in `points`; 0 when absent.
      "lengths": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "present": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
      # [O] closed contour length in original pixels; 0 when absent.
      "boundary_lengths": tfds.features.Tensor(shape=(None,), dtype=np.float32),
      # (row_mm, col_mm); NaN when `has_spacing` is False.
      "spacing": tfds.features.Tensor(shape=(2,), dtype=np.float32),
      "has_spacing": tfds.features.Tensor(shape=(), dtype=np.bool_),
      # (H, W) of the original image.
      "original_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
      # [O, H, W] in {0, 1}.
      "masks_original": tfds.features.Tensor(
          shape=(None, None, None), dtype=np.uint8, encoding="zlib"),
      "id": tfds.features.Text(),
  }
  clashes = sorted(set(extra_features or {}) & set(features))
  if clashes:
    raise ValueError(f"extra features {clashes} reuse the names of common features.")
  features.update(extra_features or {})
  return tfds.features.FeaturesDict(features)


def read_image_and_label_map(record: SourceRecord) -> RecordData:
  """Read an image and its label map with `images`, the default `read_record`.

  Raises:
    images.ImageReadError: unreadable image or label map.
    ImageSizeMismatchError: image and label map differ in size.
  """
  if record.image_path is None or record.mask_path is None:
    raise SourceRecordError(
        f"{record.example_id}: the default reader needs an image and a label map file, "
        f"got image_path={record.image_path} and mask_path={record.mask_path}.")
  image = images.read_image(record.image_path)
  label_map = images.read_label_map(record.mask_path)
  if image.shape != label_map.shape:
    raise ImageSizeMismatchError(
        f"{record.mask_path}: label map is {label_map.shape[0]}x{label_map.shape[1]} "
        f"(HxW) but image {record.image_path} is {image.shape[0]}x{image.shape[1]}; "
        "both must have the same size.")
  return RecordData(image=image, label_map=label_map, spacing=record.spacing)


def encode_example(
    record: SourceRecord,
    metadata: DatasetMetadata,
    image_size: int,
    skip_degenerate: bool = False,
    data: RecordData | None = None,
) -> tuple[dict[str, Any], list[str]]:
  """Encode one record as a stored example.

  Contours are traced on the original label map and only then mapped to
  normalised network coordinates, so resizing never changes their shape.

  Args:
    record: the files of the example.
    metadata: organs in channel order.
    image_size: network input side S in pixels.
    skip_degenerate: treat a degenerate organ as absent (its masks are zeroed
      so that `present` and the masks agree) instead of raising.
    data: the record already read; None reads it with `read_image_and_label_map`.

  Returns:
    (features dict as in `example_features`, names of organs skipped as
    degenerate).

  Raises:
    images.ImageReadError: unreadable image or label map.
    ImageSizeMismatchError: image and label map differ in size.
    contours.LabelValueError: label values that are not organ labels.
    contours.DegenerateContourError: degenerate organ, unless skip_degenerate.
  """
  if data is None:
    data = read_image_and_label_map(record)
  image = np.asarray(data.image, np.float32)
  source = str(record.mask_path) if record.mask_path is not None else record.source
  if data.organ_masks is not None:
    # A copy, because a degenerate organ skipped below gets its mask zeroed.
    organ_masks = np.array(data.organ_masks, dtype=bool)
    expected_shape = (len(metadata.organs), *image.shape)
  else:
    label_map = np.asarray(data.label_map)
    expected_shape = label_map.shape
    organ_masks = np.array(contours.organ_masks(label_map, metadata.organs, source=source))
  if image.ndim != 2 or organ_masks.shape[-2:] != image.shape or (
      data.organ_masks is not None and organ_masks.shape != expected_shape):
    raise ImageSizeMismatchError(
        f"{source}: masks have shape {organ_masks.shape} but the image has shape "
        f"{image.shape}; expected one 2-D [H, W] mask per organ of the same size as the image.")

  organ_contours: list[np.ndarray | None] = []
  degenerate: list[str] = []
  for index, organ in enumerate(metadata.organs):
    contour, report = contours.extract_contour(
        organ_masks[index], source=source, organ=organ.name, skip_degenerate=skip_degenerate)
    if contour is None and report.degenerate:
      degenerate.append(organ.name)
      organ_masks[index] = False
    organ_contours.append(contour)

  network_image, transform = preprocess.prepare_image(image, image_size)
  network_masks = preprocess.resize_masks(organ_masks, transform)

  points = []
  lengths = []
  boundary_lengths = []
  for contour in organ_contours:
    if contour is None:
      lengths.append(0)
      boundary_lengths.append(0.0)
      continue
    points.append(np.asarray(transform.to_normalized(contour), np.float32))
    lengths.append(len(contour))
    boundary_lengths.append(contours.polygon_perimeter(contour))

  if data.spacing is None:
    spacing = np.full((2,), np.nan, np.float32)
  else:
    spacing = np.asarray(data.spacing, np.float32)
  features = {
      "image": np.asarray(network_image, np.float32),
      "masks": np.asarray(network_masks, np.uint8),
      "points": np.concatenate(points, axis=0) if points else np.zeros((0, 2), np.float32),
      "lengths": np.asarray(lengths, np.int32),
      "present": np.asarray([c is not None for c in organ_contours], np.bool_),
      "boundary_lengths": np.asarray(boundary_lengths, np.float32),
      "spacing": spacing,
      "has_spacing": data.spacing is not None,
      "original_size": np.asarray(image.shape, np.int32),
      "masks_original": organ_masks.astype(np.uint8),
      "id": record.example_id,
  }
  clashes = sorted(set(data.extra) & set(features))
  if clashes:
    raise ValueError(f"{source}: extra values {clashes} reuse the names of common features.")
  features.update(data.extra)
  return features, degenerate


# ----------------------------------------------------------------------------
# Statistics.


def points_budget(max_length: int, multiple: int = POINTS_BUDGET_MULTIPLE) -> int:
  """Round the longest organ point set up to a positive multiple of `multiple`."""
  return multiple * max(1, math.ceil(max_length / multiple))


def compute_statistics(
    examples: Mapping[str, Sequence[Mapping[str, Any]]],
    organ_names: Sequence[str],
) -> dict[str, Any]:
  """Compute per-split statistics from encoded examples.

  Args:
    examples: split name -> encoded examples of that split.
    organ_names: organs in channel order.

  Returns:
    JSON-ready dict with `mean_boundary_lengths` (organ -> mean closed contour
    length in original pixels over the train examples where the organ is
    present, None when it never is), `split_mean_boundary_lengths` (split ->
    the same per split), `presence_counts` (split -> organ -> count),
    `max_points` (longest single-organ point set over all splits),
    `points_budget` and `split_sizes`.
  """
  presence_counts = {}
  max_points = 0
  for split, split_examples in examples.items():
    counts = np.zeros(len(organ_names), np.int64)
    for example in split_examples:
      counts += example["present"]
      if len(example["lengths"]):
        max_points = max(max_points, int(np.max(example["lengths"])))
    presence_counts[split] = {name: int(c) for name, c in zip(organ_names, counts)}

  split_mean_boundary_lengths = {
      split: _mean_boundary_lengths(split_examples, organ_names)
      for split, split_examples in examples.items()
  }
  mean_boundary_lengths = _mean_boundary_lengths(examples.get("train", ()), organ_names)
  for name, value in mean_boundary_lengths.items():
    if value is None:
      logger.warning(
          "Organ %r is absent from every train example, so it has no mean boundary "
          "length. A graph template needs an explicit node count for it.", name)

  return {
      "mean_boundary_lengths": mean_boundary_lengths,
      "split_mean_boundary_lengths": split_mean_boundary_lengths,
      "presence_counts": presence_counts,
      "max_points": max_points,
      "points_budget": points_budget(max_points),
      "split_sizes": {split: len(v) for split, v in examples.items()},
  }


def _mean_boundary_lengths(
    examples: Sequence[Mapping[str, Any]], organ_names: Sequence[str],
) -> dict[str, float | None]:
  """Return organ -> mean boundary length over the examples where it is present."""
  means: dict[str, float | None] = {}
  for index, name in enumerate(organ_names):
    values = [float(e["boundary_lengths"][index]) for e in examples if e["present"][index]]
    means[name] = float(np.mean(values)) if values else None
  return means


def source_fingerprint(listing: SourceListing) -> str:
  """Return a SHA-256 over the names and sizes of all listed source files.

  Sizes rather than contents keep this cheap, and an edited PNG almost always
  changes size. Moving the folder keeps the fingerprint because only the
  file names enter it.
  """
  paths = set(listing.extra_files)
  for record in listing.records:
    paths.update(record.paths())
  for entry in listing.skipped:
    paths.add(Path(entry["file"]))
  digest = hashlib.sha256()
  for path in sorted(paths, key=lambda p: (p.parent.name, p.name)):
    size = path.stat().st_size if path.is_file() else -1
    digest.update(f"{path.parent.name}/{path.name}\0{size}\n".encode())
  for record in listing.records:
    digest.update(f"{record.example_id}\0{record.patient_id}\0{record.spacing}\n".encode())
    if record.attributes:
      digest.update(f"{sorted(record.attributes.items())}\n".encode())
  return digest.hexdigest()


def index_files(
    folder: Path, suffixes: Sequence[str], kind: str,
) -> tuple[dict[str, Path], list[dict[str, str]]]:
  """Index the files of `folder` by stem (the name without `images.image_suffix`).

  Hidden files and sub-folders are ignored. Files with another suffix are
  returned as skipped entries.

  Returns:
    (stem -> path, skipped entries).

  Raises:
    DatasetSourceError: two files share a stem (e.g. `a.png` and `a.jpg`).
  """
  by_stem: dict[str, Path] = {}
  skipped = []
  for path in sorted(folder.iterdir()):
    if path.name.startswith(".") or not path.is_file():
      continue
    suffix = images.image_suffix(path)
    if suffix not in suffixes:
      skipped.append({
          "file": str(path),
          "reason": f"{kind} suffix {suffix!r} is not one of {list(suffixes)}",
      })
      continue
    stem = images.image_stem(path)
    if stem in by_stem:
      raise DatasetSourceError(
          f"{folder}: files {by_stem[stem].name} and {path.name} share the stem "
          f"{stem!r}, so it is unclear which {kind} to use. Remove or rename one.")
    by_stem[stem] = path
  return by_stem, skipped


# ----------------------------------------------------------------------------
# Builder.


class MaskDatasetBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
  """Base TFDS builder for image + organ label map datasets.

  Subclasses set `name`, `VERSION`, `MANUAL_DOWNLOAD_INSTRUCTIONS` (the
  expected folder layout) and implement `_dataset_metadata` and
  `_list_sources`. A dataset whose files are not one image file and one
  label map file overrides `read_record`. One with per-example values beyond
  the common features declares them in `extra_features`, and one with
  published splits overrides `assign_splits`. Instantiate with a config from
  `make_config`.
  """

  # False for datasets of masks only, whose stored image is all zeros.
  HAS_IMAGES = True
  # Graph scale factor s that `prepare` uses to report node counts
  # (reference: 0.05 for chest X-ray, 0.1 elsewhere).
  GRAPH_SCALE_FACTOR = 0.1

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      MaskBuilderConfig(name=config_name(size), image_size=size) for size in (256, 128, 512)
  ]

  @classmethod
  def make_config(
      cls,
      image_size: int,
      skip_degenerate: bool = False,
      split_seed: int = 0,
      split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
      **options: Any,
  ) -> MaskBuilderConfig:
    """Return the config for these settings, predefined or new.

    Raises:
      ValueError: invalid settings, or `options` this builder does not have.
    """
    if options:
      raise ValueError(
          f"Dataset {cls.name!r} has no builder options; got {sorted(options)}.")
    split_fractions = tuple(float(f) for f in split_fractions)
    _validate_settings(image_size, split_seed, split_fractions)
    name = config_name(image_size, skip_degenerate, split_seed, split_fractions)
    # TFDS rejects a new config object named like a predefined one.
    predefined = cls.builder_configs.get(name)
    if predefined is not None:
      return predefined
    return MaskBuilderConfig(
        name=name,
        image_size=int(image_size),
        skip_degenerate=bool(skip_degenerate),
        split_seed=int(split_seed),
        split_fractions=split_fractions,
    )

  @abc.abstractmethod
  def _dataset_metadata(self, manual_dir: Path) -> DatasetMetadata:
    """Return the organs and allowed flips of the dataset."""

  @abc.abstractmethod
  def _list_sources(self, manual_dir: Path) -> SourceListing:
    """List the image/label-map pairs in `manual_dir`.

    Raises:
      DatasetSourceError: a required folder or file is missing.
    """

  @classmethod
  def extra_features(cls) -> dict[str, tfds.features.FeatureConnector]:
    """Return the dataset-specific features stored beside the common ones."""
    return {}

  def read_record(self, record: SourceRecord, metadata: DatasetMetadata) -> RecordData:
    """Read one record into an image, a label map, spacing and extra values.

    The default reads an image and a label map with `images.read_image` and
    `images.read_label_map`, and takes the spacing from the record.

    Raises:
      images.ImageReadError, ImageSizeMismatchError, SourceRecordError: the
        record cannot be used; the builder skips it and reports the reason.
    """
    del metadata
    return read_image_and_label_map(record)

  def assign_splits(
      self, listing: SourceListing, patients: Sequence[str],
  ) -> dict[str, tuple[str, ...]]:
    """Return split name -> patient ids; the default is `split_patients`.

    Args:
      listing: the source listing.
      patients: patient ids of the examples that were encoded.
    """
    del listing
    config: MaskBuilderConfig = self.builder_config
    return split_patients(sorted(set(patients)), config.split_seed, config.split_fractions)

  def list_sources(self, manual_dir: str | os.PathLike[str]) -> SourceListing:
    """List the sources, raising DatasetSourceError when there are none."""
    manual_dir = Path(manual_dir)
    if not manual_dir.is_dir():
      raise DatasetSourceError(
          f"{self.name}: source folder {manual_dir} does not exist. "
          f"Expected layout:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    listing = self._list_sources(manual_dir)
    if not listing.records:
      reasons = "".join(f"\n  {e['file']}: {e['reason']}" for e in listing.skipped[:10])
      hint = ""
      if self.name != "mask_folder" and (manual_dir / "metadata.json").is_file():
        hint = ("\nThe folder has a metadata.json, as in the mask_folder layout: to read it "
                "that way, use the dataset name mask_folder "
                "(--config.dataset.name=mask_folder, or prepare --dataset mask_folder).")
      raise DatasetSourceError(
          f"{self.name}: no image with a matching label map in {manual_dir}."
          f"{reasons}{hint}\nExpected layout:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return listing

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__class__.__doc__,
        features=example_features(self.builder_config.image_size, self.extra_features()),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config: MaskBuilderConfig = self.builder_config
    manual_dir = Path(dl_manager.manual_dir)
    metadata = self._dataset_metadata(manual_dir)
    listing = self.list_sources(manual_dir)
    # NOTE: every encoded example stays in memory until TFDS has written it
    # (about 1 MB for a 512x512 two-organ image at S=256), because the split
    # and the statistics need all of them and each file is read only once.
    encoded, patients, skipped, degenerate = self._encode_all(listing, metadata)
    if not encoded:
      reasons = "".join(f"\n  {e['file']}: {e['reason']}" for e in skipped[:5])
      raise DatasetSourceError(
          f"{self.name}: every one of the {len(listing.records)} image and label-map pairs "
          f"in {manual_dir} was skipped, so there is nothing to train on. The first "
          f"reasons:{reasons}\nFix the files or the organs of the dataset metadata, "
          "then run the command again.")

    try:
      patient_split = self.assign_splits(listing, sorted(set(patients.values())))
    except ValueError as e:
      raise DatasetSourceError(f"{manual_dir}: {e}") from e
    split_of_patient = {p: split for split, ids in patient_split.items() for p in ids}
    by_split: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for example in encoded:
      by_split[split_of_patient[patients[example["id"]]]].append(example)

    statistics = compute_statistics(by_split, metadata.organ_names)
    self.info.metadata.update(metadata.to_dict())
    self.info.metadata.update(statistics)
    self.info.metadata.update({
        "image_size": config.image_size,
        "has_images": self.HAS_IMAGES,
        "graph_scale_factor": self.GRAPH_SCALE_FACTOR,
        "split_seed": config.split_seed,
        "split_fractions": list(config.split_fractions),
        "split_patients": {split: list(ids) for split, ids in patient_split.items()},
        "skipped": skipped,
        "degenerate_skipped": degenerate,
        "source_dir": str(manual_dir.resolve()),
        "source_fingerprint": source_fingerprint(listing),
    })
    logger.info(
        "%s/%s: %d examples (%s), %d files skipped, points budget %d.",
        self.name, config.name, len(encoded), statistics["split_sizes"], len(skipped),
        statistics["points_budget"])
    return {split: self._generate_examples(by_split[split]) for split in SPLITS}

  def _encode_all(self, listing: SourceListing, metadata: DatasetMetadata):
    """Encode every record once, collecting skipped files and degenerate organs."""
    config: MaskBuilderConfig = self.builder_config
    skipped = [dict(entry) for entry in listing.skipped]
    encoded = []
    patients = {}
    degenerate = []
    for record in listing.records:
      if record.example_id in patients:
        raise DatasetSourceError(
            f"{record.image_path}: example id {record.example_id!r} appears twice, "
            "but ids must be unique.")
      try:
        data = self.read_record(record, metadata)
        features, degenerate_organs = encode_example(
            record, metadata, config.image_size, config.skip_degenerate, data=data)
      except contours.DegenerateContourError as e:
        raise contours.DegenerateContourError(
            f"{e} Fix the label map, or prepare with skip_degenerate=True to treat "
            "the organ as absent in this image.") from e
      except (images.ImageReadError, ImageSizeMismatchError, contours.LabelValueError,
              SourceRecordError) as e:
        logger.warning("Skipping example %s: %s", record.example_id, e)
        skipped.append({"file": record.source, "reason": str(e)})
        continue
      if len(encoded) % 50 == 49:
        logger.info("%s: encoded %d of %d records.", self.name, len(encoded) + 1,
                    len(listing.records))
      encoded.append(features)
      patients[record.example_id] = record.patient_id
      degenerate.extend({"id": record.example_id, "organ": name} for name in degenerate_organs)
    return encoded, patients, skipped, degenerate

  def _generate_examples(
      self, examples: Sequence[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for example in examples:
      yield example["id"], example


# ----------------------------------------------------------------------------
# Loading.


def _builder_class(name: str) -> type[MaskDatasetBuilder]:
  # Imported here because the registry imports the builder modules, which
  # import this one.
  from mask_hybridgnet_jax.datasets import registry  # pylint: disable=g-import-not-at-top

  if name not in registry.BUILDERS:
    raise ValueError(
        f"Unknown dataset {name!r}; available datasets are {registry.list_datasets()}.")
  return registry.BUILDERS[name]


def _make_builder(
    name: str,
    data_dir: str | os.PathLike[str],
    image_size: int,
    skip_degenerate: bool,
    split_seed: int,
    split_fractions: Sequence[float],
    builder_options: Mapping[str, Any] | None = None,
) -> MaskDatasetBuilder:
  cls = _builder_class(name)
  config = cls.make_config(
      image_size, skip_degenerate, split_seed, split_fractions, **dict(builder_options or {}))
  return cls(data_dir=os.fspath(data_dir), config=config, file_format=FILE_FORMAT)


def prepare(
    name: str,
    *,
    manual_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    image_size: int,
    skip_degenerate: bool = False,
    split_seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    overwrite: bool = False,
    builder_options: Mapping[str, Any] | None = None,
) -> MaskDatasetBuilder:
  """Prepare a dataset from `manual_dir` into `data_dir` and return its builder.

  An already prepared dataset is reused unless `overwrite` is set.
  `builder_options` are dataset-specific settings, such as `mask_size` of
  `jsrt_contours`.

  Raises:
    DatasetSourceError: `manual_dir` is missing or contains no usable pair.
  """
  builder = _make_builder(
      name, data_dir, image_size, skip_degenerate, split_seed, split_fractions, builder_options)
  if builder.is_prepared() and not overwrite:
    return builder
  builder.list_sources(manual_dir)
  mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          manual_dir=os.fspath(manual_dir), download_mode=mode))
  return builder


def load_builder(
    name: str,
    *,
    manual_dir: str | os.PathLike[str] | None,
    data_dir: str | os.PathLike[str],
    image_size: int,
    skip_degenerate: bool = False,
    split_seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    builder_options: Mapping[str, Any] | None = None,
) -> MaskDatasetBuilder:
  """Return a prepared builder, preparing the dataset first if needed.

  When the dataset is already prepared and `manual_dir` is given, the source
  files are checked against the fingerprint stored at preparation, so a
  changed source folder is never served from a stale copy. With
  `manual_dir=None` only an already prepared dataset can be loaded.

  Raises:
    DatasetSourceError: `manual_dir` is missing, contains no usable pair, or is
      None for a dataset that is not prepared.
    PreparedDatasetMismatchError: the prepared copy came from other files.
  """
  builder = _make_builder(
      name, data_dir, image_size, skip_degenerate, split_seed, split_fractions, builder_options)
  if not builder.is_prepared():
    if manual_dir is None:
      raise DatasetSourceError(
          f"{name}/{builder.builder_config.name} is not prepared in {data_dir}. Pass the "
          f"source folder as manual_dir. Expected layout:\n"
          f"{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return prepare(
        name, manual_dir=manual_dir, data_dir=data_dir, image_size=image_size,
        skip_degenerate=skip_degenerate, split_seed=split_seed,
        split_fractions=split_fractions, builder_options=builder_options)

  if manual_dir is not None and not Path(manual_dir).exists():
    logger.warning(
        "Source folder %s does not exist, so the prepared copy in %s cannot be checked "
        "against it. Loading the prepared copy.", manual_dir, builder.data_path)
  elif manual_dir is not None:
    stored = builder.info.metadata.get("source_fingerprint")
    current = source_fingerprint(builder.list_sources(manual_dir))
    if stored != current:
      raise PreparedDatasetMismatchError(
          f"{builder.data_path} was prepared from {builder.info.metadata.get('source_dir')}, "
          f"whose files differ from those now in {manual_dir} (files added, removed or "
          "changed). Use another data_dir, or prepare it again: `mask-hybridgnet prepare "
          "--overwrite` with the same --dataset, --manual_dir, --data_dir and --image_size "
          "(prepare(..., overwrite=True) in Python).")
  return builder


def dataset_metadata(builder: MaskDatasetBuilder) -> tuple[DatasetMetadata, dict[str, Any]]:
  """Return the `DatasetMetadata` of a prepared builder and its statistics.

  The statistics dict contains every other key of `builder.info.metadata`:
  `image_size`, `points_budget`, `max_points`, `mean_boundary_lengths`,
  `split_mean_boundary_lengths`, `presence_counts`, `split_sizes`,
  `split_patients`, `split_seed`, `split_fractions`, `skipped`,
  `degenerate_skipped`, `source_dir`, `source_fingerprint`, `has_images`
  and `graph_scale_factor`. Datasets prepared before the last three keys
  existed get `has_images` True and their per-split means left out.
  """
  stored = dict(builder.info.metadata or {})
  missing = [key for key in ("organs", "points_budget") if key not in stored]
  if missing:
    raise ValueError(
        f"{builder.data_path}: dataset metadata lacks {missing}; the dataset was not "
        "prepared by this version of the builder. Prepare it again with overwrite=True.")
  metadata = DatasetMetadata.from_dict(
      {key: stored[key] for key in _METADATA_KEYS if key in stored},
      source=f"{builder.data_path}/metadata.json")
  statistics = {key: value for key, value in stored.items() if key not in _METADATA_KEYS}
  statistics.setdefault("has_images", True)
  return metadata, statistics


def read_split(builder: MaskDatasetBuilder, split: str):
  """Return a random-access data source of one split (`len`, `[i]`)."""
  available = sorted(builder.info.splits.keys())
  if split not in available:
    raise ValueError(
        f"{builder.name}/{builder.builder_config.name} has no split {split!r}; "
        f"available splits are {available}.")
  return builder.as_data_source(split)
