"""Tests of the TFDS mask dataset builders, the patient split and statistics."""

from __future__ import annotations

import json
import math
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from mask_hybridgnet_jax import contours
from mask_hybridgnet_jax.datasets import common
from mask_hybridgnet_jax.datasets import registry
from mask_hybridgnet_jax.datasets import synthetic
from mask_hybridgnet_jax.organs import DatasetMetadata, Organ

SOURCE_SIZE = 96
IMAGE_SIZE = 64
NUM_IMAGES = 8
TWO_LUNGS = DatasetMetadata(organs=(Organ("right_lung", 1), Organ("left_lung", 2)))


# ----------------------------------------------------------------------------
# Helpers (independent of the code under test where they serve as oracles).


def _write_folder(root, pairs, metadata=TWO_LUNGS, image_suffix=".png"):
  """Write a mask_folder layout from {stem: (uint8 image, uint8 label map)}."""
  (root / "images").mkdir(parents=True, exist_ok=True)
  (root / "masks").mkdir(parents=True, exist_ok=True)
  for stem, (image, labels) in pairs.items():
    Image.fromarray(image).save(root / "images" / f"{stem}{image_suffix}")
    Image.fromarray(labels).save(root / "masks" / f"{stem}.png")
  (root / "metadata.json").write_text(json.dumps(metadata.to_dict()))
  return root


def _synthetic_pairs(count, size=SOURCE_SIZE, seed=7, crop_columns=0):
  pairs = {}
  for index in range(count):
    image, labels = synthetic.synthetic_example(size, seed, index)
    if crop_columns:
      image = image[:, crop_columns:-crop_columns]
      labels = labels[:, crop_columns:-crop_columns]
    pairs[f"case_{index:02d}"] = (image, labels)
  return pairs


def _to_original(points, original_size, image_size):
  """Map normalised (x, y) back to original pixels: pad to a centred square, resize."""
  height, width = (int(v) for v in original_size)
  side = max(height, width)
  pad = np.array([(side - width) // 2, (side - height) // 2], np.float64)
  scale = image_size / side
  return (np.asarray(points, np.float64) * image_size + 0.5) / scale - 0.5 - pad


def _organ_points(example, organ_index):
  lengths = example["lengths"]
  start = int(np.sum(lengths[:organ_index]))
  return example["points"][start:start + int(lengths[organ_index])]


def _perimeter(points):
  return float(np.sum(np.hypot(*(np.roll(points, -1, axis=0) - points).T)))


def _shoelace(points):
  x, y = points[:, 0], points[:, 1]
  return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _iou(a, b):
  return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


def _all_examples(builder):
  return {split: [source[i] for i in range(len(source))]
          for split in common.SPLITS
          for source in [common.read_split(builder, split)]}


def _load(manual_dir, data_dir, name="mask_folder", **kwargs):
  return common.load_builder(
      name, manual_dir=manual_dir, data_dir=data_dir, image_size=IMAGE_SIZE, **kwargs)


# ----------------------------------------------------------------------------
# A prepared synthetic dataset shared by most tests.


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
  return synthetic.write_synthetic_dataset(
      tmp_path_factory.mktemp("source") / "synthetic", num_images=NUM_IMAGES,
      size=SOURCE_SIZE, seed=0)


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("prepared")


@pytest.fixture(scope="module")
def builder(source_dir, prepared_dir):
  return _load(source_dir, prepared_dir)


@pytest.fixture(scope="module")
def examples(builder):
  return _all_examples(builder)


@pytest.fixture(scope="module")
def statistics(builder):
  return common.dataset_metadata(builder)[1]


def test_example_shapes_and_dtypes(examples):
  example = examples["train"][0]
  total_points = int(example["lengths"].sum())
  expected = {
      "image": ((IMAGE_SIZE, IMAGE_SIZE), np.float32),
      "masks": ((2, IMAGE_SIZE, IMAGE_SIZE), np.uint8),
      "points": ((total_points, 2), np.float32),
      "lengths": ((2,), np.int32),
      "present": ((2,), np.bool_),
      "boundary_lengths": ((2,), np.float32),
      "spacing": ((2,), np.float32),
      "original_size": ((2,), np.int32),
      "masks_original": ((2, SOURCE_SIZE, SOURCE_SIZE), np.uint8),
  }
  for key, (shape, dtype) in expected.items():
    assert example[key].shape == shape, key
    assert example[key].dtype == dtype, key
  assert bool(example["has_spacing"]) is False
  assert example["id"].decode().startswith("synthetic_")


def test_image_in_unit_range(examples):
  image = examples["train"][0]["image"]
  assert image.min() >= 0.0
  assert image.max() <= 1.0


def test_masks_original_match_label_maps(examples, source_dir):
  for example in examples["train"]:
    labels = np.asarray(Image.open(source_dir / "masks" / f"{example['id'].decode()}.png"))
    np.testing.assert_array_equal(example["masks_original"][0], labels == 1)
    np.testing.assert_array_equal(example["masks_original"][1], labels == 2)


def test_masks_are_nearest_resized(examples):
  # 96 -> 64: network pixel j has its centre at original 1.5 j + 0.25, never a tie.
  nearest = np.floor(1.5 * np.arange(IMAGE_SIZE) + 0.25 + 0.5).astype(int)
  example = examples["validation"][0]
  expected = example["masks_original"][:, nearest][:, :, nearest]
  np.testing.assert_array_equal(example["masks"], expected)


def test_points_traced_at_original_resolution(examples):
  for example in examples["train"]:
    for organ in range(2):
      points = _to_original(_organ_points(example, organ), example["original_size"], IMAGE_SIZE)
      np.testing.assert_allclose(points, np.round(points), atol=2e-3)


def test_filled_contours_match_masks(examples):
  for split_examples in examples.values():
    for example in split_examples:
      for organ in range(2):
        points = _to_original(_organ_points(example, organ), example["original_size"], IMAGE_SIZE)
        filled = contours.fill_polygon(np.round(points), (SOURCE_SIZE, SOURCE_SIZE))
        assert _iou(filled, example["masks_original"][organ] > 0) > 0.95, example["id"]


def test_contours_positive_and_open(examples):
  for example in examples["train"]:
    for organ in range(2):
      points = _organ_points(example, organ)
      assert _shoelace(points) > 0
      assert not np.array_equal(points[0], points[-1])


def test_boundary_lengths_are_perimeters(examples):
  for example in examples["test"]:
    for organ in range(2):
      points = _to_original(_organ_points(example, organ), example["original_size"], IMAGE_SIZE)
      assert example["boundary_lengths"][organ] == pytest.approx(_perimeter(points), rel=1e-4)


def test_points_budget(examples, statistics):
  longest = max(int(e["lengths"].max()) for split in examples.values() for e in split)
  assert statistics["max_points"] == longest
  assert statistics["points_budget"] % 128 == 0
  assert longest <= statistics["points_budget"] < longest + 128


def test_mean_boundary_lengths_over_train(examples, statistics):
  for organ, name in enumerate(("right_lung", "left_lung")):
    perimeters = [
        _perimeter(_to_original(_organ_points(e, organ), e["original_size"], IMAGE_SIZE))
        for e in examples["train"]
    ]
    assert statistics["mean_boundary_lengths"][name] == pytest.approx(np.mean(perimeters), rel=1e-4)


def test_metadata_content(builder, statistics):
  metadata, _ = common.dataset_metadata(builder)
  assert metadata == TWO_LUNGS
  assert statistics["image_size"] == IMAGE_SIZE
  assert statistics["split_sizes"] == {"train": 6, "validation": 1, "test": 1}
  assert statistics["presence_counts"]["train"] == {"right_lung": 6, "left_lung": 6}
  assert statistics["skipped"] == []
  assert statistics["degenerate_skipped"] == []


def test_splits_disjoint_by_patient(examples, statistics):
  ids = {split: {e["id"].decode() for e in split_examples}
         for split, split_examples in examples.items()}
  assert not ids["train"] & ids["validation"]
  assert not ids["train"] & ids["test"]
  assert not ids["validation"] & ids["test"]
  assert set().union(*ids.values()) == {f"synthetic_{i:04d}" for i in range(NUM_IMAGES)}
  for split in common.SPLITS:
    assert ids[split] == set(statistics["split_patients"][split]), split


def test_preparing_again_gives_same_split(source_dir, statistics, tmp_path):
  again = common.dataset_metadata(_load(source_dir, tmp_path))[1]
  assert again["split_patients"] == statistics["split_patients"]


def test_split_seed_gets_own_config(source_dir, builder, tmp_path):
  other = _load(source_dir, tmp_path, split_seed=1)
  assert other.builder_config.name == "size64_seed1"
  assert other.data_path != builder.data_path


def test_prepared_builder_reused_without_source(builder, prepared_dir):
  reloaded = common.load_builder(
      "mask_folder", manual_dir=None, data_dir=prepared_dir, image_size=IMAGE_SIZE)
  assert len(common.read_split(reloaded, "train")) == 6


def test_unknown_split_rejected(builder):
  with pytest.raises(ValueError, match="available splits"):
    common.read_split(builder, "training")


# ----------------------------------------------------------------------------
# Patient split.


@pytest.mark.parametrize("num_patients, sizes", [
    (3, (1, 1, 1)),
    (8, (6, 1, 1)),
    (10, (7, 1, 2)),
    (110, (77, 11, 22)),
])
def test_split_sizes(num_patients, sizes):
  split = common.split_patients([f"p{i:03d}" for i in range(num_patients)], seed=0)
  assert tuple(len(split[name]) for name in common.SPLITS) == sizes


@pytest.mark.parametrize("num_patients, fractions, sizes", [
    (3, (0.1, 0.1, 0.8), (1, 1, 1)),
    (10, (0.8, 0.15, 0.05), (8, 1, 1)),
    (10, (0.5, 0.25, 0.25), (5, 3, 2)),
])
def test_split_keeps_every_split_nonempty(num_patients, fractions, sizes):
  split = common.split_patients(
      [f"p{i:03d}" for i in range(num_patients)], seed=0, fractions=fractions)
  assert tuple(len(split[name]) for name in common.SPLITS) == sizes


def test_split_follows_seeded_permutation():
  ids = [f"p{i:02d}" for i in range(10)]
  shuffled = [ids[i] for i in np.random.default_rng(4).permutation(10)]
  split = common.split_patients(list(reversed(ids)), seed=4)
  assert split["train"] == tuple(sorted(shuffled[:7]))
  assert split["validation"] == tuple(sorted(shuffled[7:8]))
  assert split["test"] == tuple(sorted(shuffled[8:]))


def test_split_keeps_repeated_patient_together():
  ids = [f"p{i}" for i in range(10)] * 3
  split = common.split_patients(ids, seed=0)
  assert sorted(sum(split.values(), ())) == sorted(set(ids))


def test_split_depends_on_seed():
  ids = [f"p{i:02d}" for i in range(20)]
  assert common.split_patients(ids, seed=0) == common.split_patients(ids, seed=0)
  assert common.split_patients(ids, seed=0) != common.split_patients(ids, seed=1)


def test_split_needs_three_patients():
  with pytest.raises(ValueError, match="at least 3 distinct patients"):
    common.split_patients(["a", "b", "a"], seed=0)


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.8, 0.3, -0.1), (0.7, 0.2, 0.2)])
def test_split_fractions_validated(fractions):
  with pytest.raises(ValueError, match="split fractions"):
    common.split_patients(["a", "b", "c"], seed=0, fractions=fractions)


def test_points_budget_rounding():
  assert [common.points_budget(n) for n in (0, 1, 128, 129, 1060)] == [128, 128, 128, 256, 1152]


# ----------------------------------------------------------------------------
# Configs and registry.


def test_registry_lists_builders():
  assert registry.list_datasets() == [
      "hc18", "jsrt_contours", "mask_folder", "montgomery", "psfhs", "sunnybrook"]


def test_predefined_config_reused():
  cls = registry.BUILDERS["mask_folder"]
  assert cls.make_config(256) is cls.builder_configs["size256"]


def test_config_name_lists_settings():
  config = registry.BUILDERS["montgomery"].make_config(64, skip_degenerate=True, split_seed=3)
  assert config.name == "size64_seed3_skipdegenerate"


def test_invalid_image_size_rejected():
  with pytest.raises(ValueError, match="image_size"):
    registry.BUILDERS["mask_folder"].make_config(0)


def test_unknown_dataset_rejected(tmp_path):
  with pytest.raises(ValueError, match="available datasets"):
    common.load_builder("jsrt", manual_dir=tmp_path, data_dir=tmp_path, image_size=64)


# ----------------------------------------------------------------------------
# Source folder problems.


def test_missing_source_folder(tmp_path):
  with pytest.raises(common.DatasetSourceError, match="does not exist") as error:
    _load(tmp_path / "nowhere", tmp_path / "prepared")
  assert "nowhere" in str(error.value)
  assert "images/<stem>.png" in str(error.value)


def test_missing_masks_folder(tmp_path):
  source = _write_folder(tmp_path / "source", _synthetic_pairs(3))
  shutil.rmtree(source / "masks")
  with pytest.raises(common.DatasetSourceError, match="masks not found"):
    _load(source, tmp_path / "prepared")


def test_folder_without_pairs(tmp_path):
  source = _write_folder(tmp_path / "source", {})
  with pytest.raises(common.DatasetSourceError, match="no image with a matching label map"):
    _load(source, tmp_path / "prepared")


def test_all_pairs_skipped_error(tmp_path):
  # Metadata whose organ labels (5, 6) appear in no mask: every pair is
  # skipped, and the error must report that instead of asking for more patients.
  wrong = DatasetMetadata(organs=(Organ("right_lung", 5), Organ("left_lung", 6)))
  source = _write_folder(tmp_path / "source", _synthetic_pairs(3), metadata=wrong)
  with pytest.raises(common.DatasetSourceError, match="every one of the 3") as error:
    _load(source, tmp_path / "prepared")
  assert "case_00" in str(error.value)
  assert "more patients" not in str(error.value)


def test_wrong_builder_suggests_mask_folder(tmp_path):
  source = _write_folder(tmp_path / "source", _synthetic_pairs(3))
  with pytest.raises(common.DatasetSourceError, match="dataset.name=mask_folder"):
    _load(source, tmp_path / "prepared", name="montgomery")


def test_unprepared_without_source(tmp_path):
  with pytest.raises(common.DatasetSourceError, match="not prepared"):
    common.load_builder("mask_folder", manual_dir=None, data_dir=tmp_path, image_size=64)


def test_duplicate_stems_rejected(tmp_path):
  source = _write_folder(tmp_path / "source", _synthetic_pairs(3))
  shutil.copy(source / "images" / "case_00.png", source / "images" / "case_00.bmp")
  with pytest.raises(common.DatasetSourceError, match="share the stem 'case_00'"):
    _load(source, tmp_path / "prepared")


@pytest.fixture(scope="module")
def skipped_statistics(tmp_path_factory):
  root = tmp_path_factory.mktemp("skips")
  pairs = _synthetic_pairs(4)
  image, labels = pairs["case_00"]
  pairs["wrong_label"] = (image, np.where(labels == 2, 7, labels).astype(np.uint8))
  pairs["wrong_size"] = (image[:-4], labels)
  source = _write_folder(root / "source", pairs)
  shutil.copy(source / "masks" / "case_00.png", source / "masks" / "orphan_mask.png")
  shutil.copy(source / "images" / "case_00.png", source / "images" / "lonely_image.png")
  (source / "images" / "broken.png").write_bytes(b"not a png")
  shutil.copy(source / "masks" / "case_00.png", source / "masks" / "broken.png")
  (source / "masks" / "notes.txt").write_text("a note")
  builder = _load(source, root / "prepared")
  skipped = {entry["file"].rsplit("/", 2)[-2] + "/" + entry["file"].rsplit("/", 1)[-1]:
             entry["reason"] for entry in common.dataset_metadata(builder)[1]["skipped"]}
  return builder, skipped


@pytest.mark.parametrize("file, reason", [
    ("masks/orphan_mask.png", "no image"),
    ("images/lonely_image.png", "no mask"),
    ("images/broken.png", "broken.png"),
    ("images/wrong_size.png", "same size"),
    ("images/wrong_label.png", "not organ labels"),
    ("masks/notes.txt", "suffix"),
])
def test_skipped_file_has_reason(skipped_statistics, file, reason):
  _, skipped = skipped_statistics
  assert reason in skipped[file]


def test_skipped_files_not_in_dataset(skipped_statistics):
  builder, skipped = skipped_statistics
  _, statistics = common.dataset_metadata(builder)
  assert len(skipped) == 6
  assert sum(statistics["split_sizes"].values()) == 4


def _write_degenerate_source(root):
  pairs = _synthetic_pairs(3)
  image, labels = pairs["case_01"]
  labels = np.where(labels == 2, 0, labels).astype(np.uint8)
  labels[10, 10] = 2  # a single pixel encloses no area
  pairs["case_01"] = (image, labels)
  return _write_folder(root, pairs)


def test_degenerate_organ_raises(tmp_path):
  source = _write_degenerate_source(tmp_path / "source")
  with pytest.raises(contours.DegenerateContourError) as error:
    _load(source, tmp_path / "prepared")
  assert "case_01.png" in str(error.value)
  assert "left_lung" in str(error.value)
  assert "skip_degenerate=True" in str(error.value)


def test_degenerate_organ_skipped_when_asked(tmp_path):
  source = _write_degenerate_source(tmp_path / "source")
  builder = _load(source, tmp_path / "prepared", skip_degenerate=True)
  _, statistics = common.dataset_metadata(builder)
  example = next(e for split in _all_examples(builder).values() for e in split
                 if e["id"] == b"case_01")
  assert statistics["degenerate_skipped"] == [{"id": "case_01", "organ": "left_lung"}]
  assert example["present"].tolist() == [True, False]
  assert example["lengths"][1] == 0
  assert example["masks"][1].sum() == 0
  assert example["masks_original"][1].sum() == 0


def test_changed_source_detected(tmp_path):
  source = _write_folder(tmp_path / "source", _synthetic_pairs(3))
  _load(source, tmp_path / "prepared")
  shutil.copy(source / "images" / "case_00.png", source / "images" / "case_99.png")
  shutil.copy(source / "masks" / "case_00.png", source / "masks" / "case_99.png")
  with pytest.raises(common.PreparedDatasetMismatchError, match="overwrite=True"):
    _load(source, tmp_path / "prepared")
  rebuilt = common.prepare(
      "mask_folder", manual_dir=source, data_dir=tmp_path / "prepared",
      image_size=IMAGE_SIZE, overwrite=True)
  assert sum(common.dataset_metadata(rebuilt)[1]["split_sizes"].values()) == 4


# ----------------------------------------------------------------------------
# Non-square images and spacing.


@pytest.fixture(scope="module")
def cropped_builder(tmp_path_factory):
  root = tmp_path_factory.mktemp("cropped")
  source = _write_folder(root / "source", _synthetic_pairs(3, crop_columns=8), image_suffix=".jpg")
  (source / "spacing.csv").write_text("stem,row_mm,col_mm\ncase_00,0.5,0.25\ncase_02,1,2\n")
  return _load(source, root / "prepared")


def test_non_square_contours_match_masks(cropped_builder):
  for split_examples in _all_examples(cropped_builder).values():
    for example in split_examples:
      assert example["original_size"].tolist() == [SOURCE_SIZE, SOURCE_SIZE - 16]
      for organ in range(2):
        points = _to_original(_organ_points(example, organ), example["original_size"], IMAGE_SIZE)
        filled = contours.fill_polygon(np.round(points), example["original_size"])
        assert _iou(filled, example["masks_original"][organ] > 0) > 0.95


def test_spacing_from_csv(cropped_builder):
  by_id = {e["id"].decode(): e for split in _all_examples(cropped_builder).values() for e in split}
  assert by_id["case_00"]["spacing"].tolist() == [0.5, 0.25]
  assert bool(by_id["case_00"]["has_spacing"]) is True
  assert bool(by_id["case_01"]["has_spacing"]) is False
  assert np.isnan(by_id["case_01"]["spacing"]).all()


def test_invalid_spacing_rejected(tmp_path):
  source = _write_folder(tmp_path / "source", _synthetic_pairs(3))
  (source / "spacing.csv").write_text("stem,row_mm,col_mm\ncase_00,0.5,-1\n")
  with pytest.raises(common.DatasetSourceError, match="line 2"):
    _load(source, tmp_path / "prepared")


# ----------------------------------------------------------------------------
# Montgomery, from symbolic links to a few real files.

MONTGOMERY_STEMS = (
    "MCUCXR_0001_0", "MCUCXR_0002_0", "MCUCXR_0003_0", "MCUCXR_0005_0",
    "MCUCXR_0104_1", "MCUCXR_0113_1", "MCUCXR_0126_1", "MCUCXR_0141_1",
)


@pytest.fixture(scope="module")
def montgomery_builder(montgomery_dir, tmp_path_factory):
  montgomery_dir = pathlib.Path(montgomery_dir)
  root = tmp_path_factory.mktemp("montgomery")
  source = root / "source"
  for folder in ("images", "masks"):
    (source / folder).mkdir(parents=True)
    for stem in MONTGOMERY_STEMS:
      (source / folder / f"{stem}.png").symlink_to(montgomery_dir / folder / f"{stem}.png")
  (source / "landmarks").symlink_to(montgomery_dir / "landmarks")
  builder = _load(source, root / "prepared", name="montgomery")
  return builder, _all_examples(builder)


def test_montgomery_organs(montgomery_builder):
  builder, _ = montgomery_builder
  metadata, statistics = common.dataset_metadata(builder)
  assert metadata.organ_names == ("right_lung", "left_lung")
  assert metadata.organ_labels == (1, 2)
  assert not metadata.allow_horizontal_flip
  assert statistics["skipped"] == []


def test_montgomery_both_lungs_present(montgomery_builder):
  _, examples = montgomery_builder
  for split_examples in examples.values():
    for example in split_examples:
      assert example["present"].tolist() == [True, True], example["id"]


def test_montgomery_patient_ids(montgomery_builder):
  builder, _ = montgomery_builder
  patients = common.dataset_metadata(builder)[1]["split_patients"]
  assert sorted(sum(patients.values(), [])) == sorted(s[:-2] for s in MONTGOMERY_STEMS)


def test_montgomery_mask_matches_contour(montgomery_builder, montgomery_dir):
  _, examples = montgomery_builder
  example = examples["train"][0]
  labels = np.asarray(Image.open(pathlib.Path(montgomery_dir) / "masks" / f"{example['id'].decode()}.png"))
  for organ, label in enumerate((1, 2)):
    mask = example["masks_original"][organ] > 0
    np.testing.assert_array_equal(mask, labels == label)
    points = _to_original(_organ_points(example, organ), example["original_size"], IMAGE_SIZE)
    filled = contours.fill_polygon(np.round(points), labels.shape)
    assert math.isclose(filled.sum(), mask.sum(), rel_tol=0.02), label
    assert _iou(filled, mask) > 0.97, label
