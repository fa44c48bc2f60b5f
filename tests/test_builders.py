"""Builders of the real datasets, built offline from a few files of each.

Each fixture links a handful of source files into a temporary folder laid
out as the dataset is distributed, and prepares it. The tests compare the
decoded examples with oracles computed here from the source files:
matplotlib polygon tests, scanline fills, raw MetaImage bytes and pydicom.
"""

from __future__ import annotations

import csv
import math
import os
import pathlib
import warnings

import numpy as np
import pydicom
import pytest
from matplotlib.path import Path as PolygonPath
from PIL import Image
from scipy import ndimage
from skimage import measure

from mask_hybridgnet_jax import cli
from mask_hybridgnet_jax import config_utils
from mask_hybridgnet_jax.datasets import common
from mask_hybridgnet_jax.defaults import default_config
from mask_hybridgnet_jax.train import loop

IMAGE_SIZE = 64
JSRT_MASK_SIZE = 128
HC18_CLOSED = ("001_HC", "002_HC", "003_HC", "019_HC", "019_2HC")
# Outlines that run off the image edge in the bundled HC18 subset.
HC18_OFF_EDGE = ("787_HC", "628_2HC")


def _link(source: pathlib.Path, target: pathlib.Path) -> None:
  target.parent.mkdir(parents=True, exist_ok=True)
  os.symlink(source, target)


def _all_examples(builder) -> dict[str, list[dict]]:
  examples = {}
  for split in common.SPLITS:
    source = common.read_split(builder, split)
    examples[split] = [source[i] for i in range(len(source))]
  return examples


def _by_id(examples) -> dict[str, dict]:
  return {e["id"].decode(): e for split in examples.values() for e in split}


def _polygon_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Pixel centres strictly inside the polygon, by matplotlib's point test."""
  rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
  centres = np.stack([cols.ravel(), rows.ravel()], axis=1)
  return PolygonPath(points).contains_points(centres).reshape(shape)


def _organ_index(builder, name: str) -> int:
  metadata, _ = common.dataset_metadata(builder)
  return metadata.organ_names.index(name)


# ----------------------------------------------------------------------------
# HC18.


@pytest.fixture(scope="module")
def hc18_source(data_root, tmp_path_factory):
  source = data_root / "hc18"
  if not (source / "training_set").is_dir():
    pytest.skip(f"HC18 data not found at {source}")
  root = tmp_path_factory.mktemp("hc18")
  for stem in HC18_CLOSED + HC18_OFF_EDGE:
    for name in (f"{stem}.png", f"{stem}_Annotation.png"):
      _link(source / "training_set" / name, root / "training_set" / name)
  csv_name = "training_set_pixel_size_and_HC.csv"
  _link(source / csv_name, root / csv_name)
  return root


@pytest.fixture(scope="module")
def hc18_builder(hc18_source, tmp_path_factory):
  return common.load_builder(
      "hc18", manual_dir=hc18_source, data_dir=tmp_path_factory.mktemp("hc18_prepared"),
      image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def hc18_examples(hc18_builder):
  return _by_id(_all_examples(hc18_builder))


@pytest.fixture(scope="module")
def hc18_table(hc18_source):
  with open(hc18_source / "training_set_pixel_size_and_HC.csv", newline="") as f:
    rows = list(csv.reader(f))[1:]
  return {row[0][:-len(".png")]: (float(row[1]), float(row[2])) for row in rows}


def _outline(hc18_source, stem):
  return np.asarray(Image.open(hc18_source / "training_set" / f"{stem}_Annotation.png")) > 0


def _scanline_fill(outline: np.ndarray) -> np.ndarray:
  """Fill a convex closed outline row by row, from its first to its last pixel."""
  filled = np.zeros_like(outline)
  for row in np.nonzero(outline.any(axis=1))[0]:
    columns = np.nonzero(outline[row])[0]
    filled[row, columns[0]:columns[-1] + 1] = True
  return filled


def _fit_conic_mask(outline: np.ndarray) -> np.ndarray:
  """Rasterise the least-squares conic a x^2 + b xy + c y^2 + d x + e y = 1 through an outline."""
  rows, cols = np.nonzero(outline)
  mean = np.array([cols.mean(), rows.mean()])
  scale = float(np.std(np.stack([cols, rows])))
  x, y = (cols - mean[0]) / scale, (rows - mean[1]) / scale
  design = np.stack([x * x, x * y, y * y, x, y], axis=1)
  a, b, c, d, e = np.linalg.lstsq(design, np.ones_like(x), rcond=None)[0]
  grid_rows, grid_cols = np.mgrid[0:outline.shape[0], 0:outline.shape[1]]
  gx, gy = (grid_cols - mean[0]) / scale, (grid_rows - mean[1]) / scale
  value = a * gx * gx + b * gx * gy + c * gy * gy + d * gx + e * gy
  centre = np.linalg.solve([[2 * a, b], [b, 2 * c]], [-d, -e])
  centre_value = a * centre[0]**2 + b * centre[0] * centre[1] + c * centre[1]**2 + (
      d * centre[0] + e * centre[1])
  return np.sign(value - 1) == np.sign(centre_value - 1)


@pytest.mark.parametrize("stem", HC18_CLOSED)
def test_hc18_mask_equals_scanline_fill(hc18_examples, hc18_source, stem):
  expected = _scanline_fill(_outline(hc18_source, stem))
  mask = hc18_examples[stem]["masks_original"][0] > 0
  assert int(mask.sum()) == int(expected.sum())
  assert np.array_equal(mask, expected)


@pytest.mark.parametrize("stem", HC18_CLOSED)
def test_hc18_perimeter_matches_reference_hc(hc18_examples, stem):
  example = hc18_examples[stem]
  pixel_size = float(example["spacing"][0])
  perimeter_mm = measure.perimeter_crofton(example["masks_original"][0] > 0, 4) * pixel_size
  assert abs(perimeter_mm - float(example["head_circumference_mm"])) < 3.0


def test_hc18_spacing_and_hc_from_csv(hc18_examples, hc18_table):
  for stem, example in hc18_examples.items():
    pixel_size, circumference = hc18_table[stem]
    assert bool(example["has_spacing"]), stem
    np.testing.assert_allclose(example["spacing"], [pixel_size, pixel_size], rtol=1e-6)
    assert float(example["head_circumference_mm"]) == pytest.approx(circumference, rel=1e-6)


@pytest.mark.parametrize("stem", HC18_OFF_EDGE)
def test_hc18_off_edge_outline_fitted(hc18_examples, hc18_source, stem):
  outline = _outline(hc18_source, stem)
  example = hc18_examples[stem]
  mask = example["masks_original"][0] > 0
  expected = _fit_conic_mask(outline)
  iou = np.logical_and(mask, expected).sum() / np.logical_or(mask, expected).sum()
  assert not bool(example["outline_closed"])
  assert bool(mask[[0, -1], :].any() or mask[:, [0, -1]].any())
  assert iou > 0.97


def test_hc18_closed_outlines_flagged(hc18_examples):
  for stem in HC18_CLOSED:
    assert bool(hc18_examples[stem]["outline_closed"]), stem


def test_hc18_repeat_image_same_patient(hc18_builder):
  _, statistics = common.dataset_metadata(hc18_builder)
  split_of = {p: s for s, ids in statistics["split_patients"].items() for p in ids}
  examples = _all_examples(hc18_builder)
  split_of_example = {e["id"].decode(): s for s, items in examples.items() for e in items}
  assert "019" in split_of
  assert split_of_example["019_HC"] == split_of_example["019_2HC"] == split_of["019"]


# ----------------------------------------------------------------------------
# JSRT contours.

JSRT_SUBSET = {
    ("Train", "train_files.txt"): 3,
    ("Val", "val_files.txt"): 2,
    ("Test", "test_files.txt"): 2,
}
JSRT_ORGANS = {
    "right_lung": slice(0, 44), "left_lung": slice(44, 94), "heart": slice(94, 120),
    "right_clavicle": slice(120, 143), "left_clavicle": slice(143, 166),
}


@pytest.fixture(scope="module")
def jsrt_source(data_root, tmp_path_factory):
  source = data_root / "jsrt_landmarks"
  if not (source / "train_files.txt").is_file():
    pytest.skip(f"JSRT landmark data not found at {source}")
  root = tmp_path_factory.mktemp("jsrt")
  listed = {}
  for (folder, list_name), count in JSRT_SUBSET.items():
    names = [line.strip() for line in (source / list_name).read_text().splitlines()
             if line.strip()]
    (root / list_name).write_text("\n".join(names[:count]) + "\n")
    for name in names[:count + (1 if folder == "Train" else 0)]:
      stem = name[:-len(".IMG")]
      _link(source / folder / "landmarks" / f"{stem}.npy", root / folder / "landmarks" / f"{stem}.npy")
    listed[folder] = [name[:-len(".IMG")] for name in names[:count + 1]]
  return root, listed


@pytest.fixture(scope="module")
def jsrt_builder(jsrt_source, tmp_path_factory):
  return common.load_builder(
      "jsrt_contours", manual_dir=jsrt_source[0],
      data_dir=tmp_path_factory.mktemp("jsrt_prepared"), image_size=IMAGE_SIZE,
      builder_options={"mask_size": JSRT_MASK_SIZE})


@pytest.fixture(scope="module")
def jsrt_examples(jsrt_builder):
  return _all_examples(jsrt_builder)


def _jsrt_points(jsrt_source, example_id):
  root, _ = jsrt_source
  path = next(root.glob(f"*/landmarks/{example_id}.npy"))
  return np.load(path).reshape(-1, 2)


def test_jsrt_every_organ_present(jsrt_builder):
  metadata, statistics = common.dataset_metadata(jsrt_builder)
  assert metadata.organ_names == tuple(JSRT_ORGANS)
  for split, (_, count) in zip(common.SPLITS, JSRT_SUBSET.items()):
    assert statistics["split_sizes"][split] == count, split
    assert statistics["presence_counts"][split] == {name: count for name in JSRT_ORGANS}, split


def test_jsrt_masks_match_polygon_rasterisation(jsrt_examples, jsrt_source):
  scale = JSRT_MASK_SIZE / 1024
  for example in jsrt_examples["train"]:
    points = (_jsrt_points(jsrt_source, example["id"].decode()) + 0.5) * scale - 0.5
    for index, indices in enumerate(JSRT_ORGANS.values()):
      expected = _polygon_mask(points[indices], (JSRT_MASK_SIZE, JSRT_MASK_SIZE))
      mask = example["masks_original"][index] > 0
      # Pixel centres on an edge count as inside for the builder only.
      differing = int(np.sum(mask != expected))
      assert differing <= 0.01 * expected.sum(), (example["id"], index)


def test_jsrt_landmarks_scaled_to_mask_frame(jsrt_examples, jsrt_source):
  example = jsrt_examples["test"][0]
  points = _jsrt_points(jsrt_source, example["id"].decode())
  expected = (points + 0.5) * JSRT_MASK_SIZE / 1024 - 0.5
  assert example["landmarks"].shape == (166, 2)
  np.testing.assert_allclose(example["landmarks"], expected, atol=1e-4)


def test_jsrt_splits_follow_published_lists(jsrt_builder, jsrt_source):
  _, listed = jsrt_source
  _, statistics = common.dataset_metadata(jsrt_builder)
  for split, (folder, list_name) in zip(common.SPLITS, JSRT_SUBSET):
    count = JSRT_SUBSET[(folder, list_name)]
    assert statistics["split_patients"][split] == sorted(listed[folder][:count]), split


def test_jsrt_unlisted_file_skipped(jsrt_builder, jsrt_source):
  _, listed = jsrt_source
  _, statistics = common.dataset_metadata(jsrt_builder)
  reasons = {pathlib.Path(e["file"]).stem: e["reason"] for e in statistics["skipped"]}
  assert "not listed" in reasons[listed["Train"][3]]


def test_jsrt_has_no_images(jsrt_builder, jsrt_examples):
  _, statistics = common.dataset_metadata(jsrt_builder)
  assert statistics["has_images"] is False
  assert not np.any(jsrt_examples["train"][0]["image"])


def test_jsrt_spacing_scaled_from_jsrt_pixels(jsrt_examples):
  # 0.175 mm pixels at 2048, so 0.35 mm at 1024 and 2.8 mm at 128.
  np.testing.assert_allclose(jsrt_examples["train"][0]["spacing"], [2.8, 2.8], rtol=1e-6)


def test_jsrt_image_model_rejected(jsrt_builder, jsrt_source, tmp_path):
  config = default_config()
  config.dataset.name = "jsrt_contours"
  config.dataset.manual_dir = str(jsrt_source[0])
  config.dataset.data_dir = str(pathlib.Path(jsrt_builder.data_dir).parents[2])
  config.dataset.image_size = IMAGE_SIZE
  config.dataset.builder_options.mask_size = JSRT_MASK_SIZE
  with pytest.raises(config_utils.ConfigError, match="has no images"):
    loop.build_experiment(config, str(tmp_path))


def test_jsrt_split_seed_rejected():
  from mask_hybridgnet_jax.datasets import jsrt_contours
  with pytest.raises(ValueError, match="published"):
    jsrt_contours.JsrtContours.make_config(IMAGE_SIZE, split_seed=1)


# ----------------------------------------------------------------------------
# PSFHS.


@pytest.fixture(scope="module")
def psfhs_source(data_root, tmp_path_factory):
  source = data_root / "psfhs"
  if not (source / "image_mha").is_dir():
    pytest.skip(f"PSFHS data not found at {source}")
  root = tmp_path_factory.mktemp("psfhs")
  for path in sorted((source / "image_mha").glob("*.mha"))[:4]:
    _link(path, root / "image_mha" / path.name)
    _link(source / "label_mha" / path.name, root / "label_mha" / path.name)
  return root


@pytest.fixture(scope="module")
def psfhs_builder(psfhs_source, tmp_path_factory):
  return common.load_builder(
      "psfhs", manual_dir=psfhs_source, data_dir=tmp_path_factory.mktemp("psfhs_prepared"),
      image_size=IMAGE_SIZE)


def _raw_metaimage(path: pathlib.Path, shape: tuple[int, ...]) -> np.ndarray:
  """The uint8 pixels after the `ElementDataFile = LOCAL` header line."""
  content = path.read_bytes()
  marker = b"ElementDataFile = LOCAL\n"
  start = content.index(marker) + len(marker)
  return np.frombuffer(content[start:], np.uint8).reshape(shape)


def test_psfhs_shapes(psfhs_builder):
  examples = _all_examples(psfhs_builder)
  example = examples["train"][0]
  assert example["masks_original"].shape == (2, 256, 256)
  assert example["masks"].shape == (2, IMAGE_SIZE, IMAGE_SIZE)
  assert tuple(example["original_size"]) == (256, 256)
  assert not bool(example["has_spacing"])


def test_psfhs_label_areas_match_raw_bytes(psfhs_builder, psfhs_source):
  examples = _by_id(_all_examples(psfhs_builder))
  assert len(examples) == 4
  for example_id, example in examples.items():
    labels = _raw_metaimage(psfhs_source / "label_mha" / f"{example_id}.mha", (256, 256))
    for index, label in enumerate((1, 2)):
      assert np.array_equal(example["masks_original"][index] > 0, labels == label), example_id


def test_psfhs_image_channels_equal(psfhs_source):
  # The oracle for the builder's grayscale reading: the three stored slices agree.
  path = sorted((psfhs_source / "image_mha").glob("*.mha"))[0]
  pixels = _raw_metaimage(path, (3, 256, 256))
  assert np.array_equal(pixels[0], pixels[1])
  assert np.array_equal(pixels[0], pixels[2])


def test_psfhs_split_deterministic(psfhs_builder, psfhs_source, tmp_path):
  again = common.load_builder(
      "psfhs", manual_dir=psfhs_source, data_dir=tmp_path, image_size=IMAGE_SIZE)
  first = common.dataset_metadata(psfhs_builder)[1]["split_patients"]
  second = common.dataset_metadata(again)[1]["split_patients"]
  ids = sorted(p.stem for p in (psfhs_source / "image_mha").glob("*.mha"))
  expected = {s: list(v) for s, v in common.split_patients(ids, seed=0).items()}
  assert first == second
  assert first == expected


def test_prepare_prints_organ_statistics(psfhs_builder, psfhs_source, capsys):
  data_dir = pathlib.Path(psfhs_builder.data_dir).parents[2]
  code = cli.main(["prepare", "--dataset", "psfhs", "--manual_dir", str(psfhs_source),
                   "--data_dir", str(data_dir), "--image_size", str(IMAGE_SIZE)])
  output = capsys.readouterr().out
  assert code == 0
  assert "pubic_symphysis (label 1): 64" in output
  assert "train: 2 examples" in output
  assert "mean boundary length" in output
  assert "skipped files: 0" in output


# ----------------------------------------------------------------------------
# Sunnybrook.

# DICOM folder -> (contour folder, DICOM numbers with both contours).
SUNNYBROOK_SUBSET = {
    "SCD0000101": ("SC-HF-I-1", (59, 79)),
    "SCD0000201": ("SC-HF-I-2", (60, 80)),
    "SCD0000301": ("SC-HF-I-4", (20, 40)),
}
# A slice of SCD0000101 with an endocardium contour only, at the position of 59.
SUNNYBROOK_ENDOCARDIUM_ONLY = 48


def _contour_name(number: int, kind: str) -> str:
  return f"IM-0001-{number:04d}-{kind}contour-manual.txt"


@pytest.fixture(scope="module")
def sunnybrook_source(data_root, tmp_path_factory):
  source = data_root / "sunnybrook"
  if not (source / "link.csv").is_file():
    pytest.skip(f"Sunnybrook data not found at {source}")
  root = tmp_path_factory.mktemp("sunnybrook")
  # The full link.csv also names SCD0000401, whose folders are left out.
  _link(source / "link.csv", root / "link.csv")
  for patient, (original, numbers) in SUNNYBROOK_SUBSET.items():
    extra = (SUNNYBROOK_ENDOCARDIUM_ONLY,) if patient == "SCD0000101" else ()
    for number in numbers + extra:
      _link(source / "dicoms" / patient / f"{number}.dcm",
            root / "dicoms" / patient / f"{number}.dcm")
      for kind in ("i", "o") if number in numbers else ("i",):
        name = _contour_name(number, kind)
        _link(source / "contourfiles" / original / f"{kind}-contours" / name,
              root / "contourfiles" / original / f"{kind}-contours" / name)
  return root


@pytest.fixture(scope="module")
def sunnybrook_builder(sunnybrook_source, tmp_path_factory):
  return common.load_builder(
      "sunnybrook", manual_dir=sunnybrook_source,
      data_dir=tmp_path_factory.mktemp("sunnybrook_prepared"), image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def sunnybrook_examples(sunnybrook_builder):
  return _by_id(_all_examples(sunnybrook_builder))


def _dicom_header(root, example_id):
  patient, number = example_id.rsplit("_", 1)
  with warnings.catch_warnings():
    # The Sunnybrook UIDs have leading zeros, which pydicom warns about.
    warnings.simplefilter("ignore")
    return pydicom.dcmread(root / "dicoms" / patient / f"{int(number)}.dcm",
                           stop_before_pixels=True)


def _contour_points(root, example_id, kind):
  patient, number = example_id.rsplit("_", 1)
  original = SUNNYBROOK_SUBSET[patient][0]
  return np.loadtxt(root / "contourfiles" / original / f"{kind}-contours" /
                    _contour_name(int(number), kind))


def test_sunnybrook_spacing_from_dicom(sunnybrook_examples, sunnybrook_source):
  assert len(sunnybrook_examples) == 7
  for example_id, example in sunnybrook_examples.items():
    header = _dicom_header(sunnybrook_source, example_id)
    assert bool(example["has_spacing"]), example_id
    np.testing.assert_allclose(example["spacing"], [float(v) for v in header.PixelSpacing],
                               rtol=1e-6)


def test_sunnybrook_slice_position_from_dicom(sunnybrook_examples, sunnybrook_source):
  for example_id, example in sunnybrook_examples.items():
    header = _dicom_header(sunnybrook_source, example_id)
    np.testing.assert_allclose(
        example["slice_position"], [float(v) for v in header.ImagePositionPatient], rtol=1e-6)


def test_sunnybrook_masks_match_contours(sunnybrook_builder, sunnybrook_examples,
                                         sunnybrook_source):
  cavity_index = _organ_index(sunnybrook_builder, "lv_cavity")
  myocardium_index = _organ_index(sunnybrook_builder, "lv_myocardium")
  for patient, (_, numbers) in SUNNYBROOK_SUBSET.items():
    for number in numbers:
      example_id = f"{patient}_{number:04d}"
      example = sunnybrook_examples[example_id]
      shape = tuple(int(v) for v in example["original_size"])
      cavity = _polygon_mask(_contour_points(sunnybrook_source, example_id, "i"), shape)
      epicardium = _polygon_mask(_contour_points(sunnybrook_source, example_id, "o"), shape)
      ring = epicardium & ~cavity
      for index, expected in ((cavity_index, cavity), (myocardium_index, ring)):
        differing = (example["masks_original"][index] > 0) != expected
        # Contour vertices lie on half-pixel positions, so some pixel centres
        # fall on edges, which only the builder counts as inside. Such pixels
        # touch the oracle's boundary.
        band = ndimage.binary_dilation(expected) & ~ndimage.binary_erosion(expected)
        assert not np.any(differing & ~band), (example_id, index)
        assert differing.sum() <= 0.05 * expected.sum(), (example_id, index)


def test_sunnybrook_endocardium_only_slice(sunnybrook_builder, sunnybrook_examples):
  example = sunnybrook_examples[f"SCD0000101_{SUNNYBROOK_ENDOCARDIUM_ONLY:04d}"]
  assert bool(example["present"][_organ_index(sunnybrook_builder, "lv_cavity")])
  assert not bool(example["present"][_organ_index(sunnybrook_builder, "lv_myocardium")])


def test_sunnybrook_slice_index_follows_location(sunnybrook_examples, sunnybrook_source):
  ids = [i for i in sunnybrook_examples if i.startswith("SCD0000101_")]
  locations = {i: float(_dicom_header(sunnybrook_source, i).SliceLocation) for i in ids}
  indices = {i: int(sunnybrook_examples[i]["slice_index"]) for i in ids}
  for first in ids:
    for second in ids:
      same_location = math.isclose(locations[first], locations[second], abs_tol=1e-3)
      assert (indices[first] == indices[second]) == same_location, (first, second)


def test_sunnybrook_missing_patient_skipped(sunnybrook_builder):
  _, statistics = common.dataset_metadata(sunnybrook_builder)
  reasons = {pathlib.Path(e["file"]).name: e["reason"] for e in statistics["skipped"]}
  assert "SCD0000401" in reasons
  assert "not found" in reasons["SCD0000401"]
