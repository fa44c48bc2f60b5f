"""Tests of the procedural synthetic dataset writer."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mask_hybridgnet_jax.datasets import synthetic
from mask_hybridgnet_jax.organs import DatasetMetadata, Organ

NUM_IMAGES = 4
SIZE = 64


def _file_hashes(folder):
  return {
      str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
      for path in sorted(folder.rglob("*")) if path.is_file()
  }


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
  return synthetic.write_synthetic_dataset(
      tmp_path_factory.mktemp("synthetic") / "data", num_images=NUM_IMAGES, size=SIZE, seed=0)


def test_same_seed_gives_identical_files(dataset_dir, tmp_path):
  again = synthetic.write_synthetic_dataset(
      tmp_path / "again", num_images=NUM_IMAGES, size=SIZE, seed=0)
  assert _file_hashes(again) == _file_hashes(dataset_dir)


def test_other_seed_gives_other_images(dataset_dir, tmp_path):
  other = synthetic.write_synthetic_dataset(
      tmp_path / "other", num_images=NUM_IMAGES, size=SIZE, seed=1)
  name = "images/synthetic_0000.png"
  assert _file_hashes(other)[name] != _file_hashes(dataset_dir)[name]


def test_image_depends_only_on_seed_and_index(dataset_dir, tmp_path):
  larger = synthetic.write_synthetic_dataset(
      tmp_path / "larger", num_images=NUM_IMAGES + 2, size=SIZE, seed=0)
  hashes = _file_hashes(larger)
  for name, digest in _file_hashes(dataset_dir).items():
    if name.startswith(("images/", "masks/")):
      assert hashes[name] == digest, name


def test_layout(dataset_dir):
  names = [f"synthetic_{i:04d}.png" for i in range(NUM_IMAGES)]
  expected = sorted(
      [f"images/{n}" for n in names] + [f"masks/{n}" for n in names]
      + ["metadata.json", "synthetic.json"])
  assert sorted(_file_hashes(dataset_dir)) == expected


def test_metadata_names_two_lungs(dataset_dir):
  metadata = DatasetMetadata.load(dataset_dir / "metadata.json")
  assert metadata == DatasetMetadata(organs=(Organ("right_lung", 1), Organ("left_lung", 2)))


def test_files_are_8bit_grayscale(dataset_dir):
  for folder in ("images", "masks"):
    with Image.open(dataset_dir / folder / "synthetic_0000.png") as image:
      assert image.mode == "L", folder
      assert image.size == (SIZE, SIZE), folder


def test_files_hold_generated_arrays(dataset_dir):
  image, labels = synthetic.synthetic_example(SIZE, 0, 2)
  stored_image = np.asarray(Image.open(dataset_dir / "images" / "synthetic_0002.png"))
  stored_labels = np.asarray(Image.open(dataset_dir / "masks" / "synthetic_0002.png"))
  np.testing.assert_array_equal(stored_image, image)
  np.testing.assert_array_equal(stored_labels, labels)


@pytest.mark.parametrize("index", range(6))
def test_right_lung_on_image_left(index):
  _, labels = synthetic.synthetic_example(96, 3, index)
  right_columns = np.nonzero(labels == 1)[1]
  left_columns = np.nonzero(labels == 2)[1]
  assert set(np.unique(labels)) == {0, 1, 2}
  assert right_columns.max() < 48
  assert left_columns.min() >= 48


@pytest.mark.parametrize("index", range(6))
def test_lungs_are_single_hole_free_components(index):
  _, labels = synthetic.synthetic_example(96, 3, index)
  for label in (1, 2):
    lung = labels == label
    _, num_components = ndimage.label(lung, structure=np.ones((3, 3)))
    assert num_components == 1, label
    np.testing.assert_array_equal(ndimage.binary_fill_holes(lung), lung)


@pytest.mark.parametrize("index", range(6))
def test_lung_boundary_is_visible(index):
  # Three pixels inside each lung must be clearly darker than three pixels
  # outside it, so the label map can be read from the image.
  image, labels = synthetic.synthetic_example(128, 5, index)
  image = image.astype(np.float64)
  for label in (1, 2):
    lung = labels == label
    inner = lung & ~ndimage.binary_erosion(lung, iterations=3)
    outer = ndimage.binary_dilation(lung, iterations=3) & ~lung
    assert image[outer].mean() - image[inner].mean() > 30, label


def test_same_arguments_reuse_folder(dataset_dir):
  before = _file_hashes(dataset_dir)
  synthetic.write_synthetic_dataset(dataset_dir, num_images=NUM_IMAGES, size=SIZE, seed=0)
  assert _file_hashes(dataset_dir) == before


def test_other_arguments_reject_existing_folder(dataset_dir):
  with pytest.raises(FileExistsError, match="contains other files"):
    synthetic.write_synthetic_dataset(dataset_dir, num_images=NUM_IMAGES, size=SIZE, seed=9)


def test_foreign_folder_rejected(tmp_path):
  (tmp_path / "notes.txt").write_text("keep me")
  with pytest.raises(FileExistsError, match="contains other files"):
    synthetic.write_synthetic_dataset(tmp_path, num_images=2, size=SIZE)


def test_empty_folder_accepted(tmp_path):
  target = tmp_path / "empty"
  target.mkdir()
  synthetic.write_synthetic_dataset(target, num_images=1, size=SIZE)
  assert json.loads((target / "synthetic.json").read_text())["num_images"] == 1


def test_no_staging_folder_left(tmp_path):
  synthetic.write_synthetic_dataset(tmp_path / "data", num_images=1, size=SIZE)
  assert [p.name for p in tmp_path.iterdir()] == ["data"]


@pytest.mark.parametrize("kwargs, match", [
    ({"num_images": 0}, "num_images"),
    ({"size": 16}, "size"),
    ({"seed": -1}, "seed"),
])
def test_invalid_arguments(tmp_path, kwargs, match):
  with pytest.raises(ValueError, match=match):
    synthetic.write_synthetic_dataset(tmp_path / "data", **kwargs)
