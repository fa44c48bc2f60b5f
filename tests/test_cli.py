"""End to end through the `mask-hybridgnet` command line on real chest X-rays."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from mask_hybridgnet_jax import cli

CONFIG_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "configs")
NUM_IMAGES = 8


@pytest.fixture(scope="module")
def trained_workdir(montgomery_dir, tmp_path_factory):
  """A model trained for a few steps with configs/test.py on 8 real images."""
  root = tmp_path_factory.mktemp("cli")
  folder = root / "montgomery"
  for sub in ("images", "masks"):
    (folder / sub).mkdir(parents=True)
    for name in sorted(os.listdir(montgomery_dir / sub))[:NUM_IMAGES]:
      os.symlink(montgomery_dir / sub / name, folder / sub / name)
  workdir = root / "run"
  status = cli.main([
      "train", "--config", os.path.join(CONFIG_DIR, "test.py"), "--workdir", str(workdir),
      "--config.dataset.name=montgomery", f"--config.dataset.manual_dir={folder}"])
  assert status == 0
  return workdir, folder


def test_train_writes_workdir(trained_workdir):
  workdir, _ = trained_workdir
  with open(workdir / "topology.json") as f:
    topology = json.load(f)
  assert [o["name"] for o in topology["organs"]] == ["right_lung", "left_lung"]
  assert (workdir / "best").is_dir()


def test_predict_writes_outputs_at_original_size(trained_workdir, tmp_path):
  workdir, folder = trained_workdir
  images = sorted((folder / "images").iterdir())[:2]
  out = tmp_path / "predictions"
  status = cli.main(["predict", "--workdir", str(workdir), "--output_dir", str(out),
                     *map(str, images)])
  assert status == 0
  with open(workdir / "topology.json") as f:
    node_counts = {o["name"]: o["nodes"] for o in json.load(f)["organs"]}
  for image_path in images:
    stem = image_path.stem
    with open(out / f"{stem}.json") as f:
      landmarks = json.load(f)
    assert set(landmarks) == {"right_lung", "left_lung"}
    for organ, points in landmarks.items():
      assert np.asarray(points).shape == (node_counts[organ], 2)
    original = Image.open(image_path)
    assert Image.open(out / f"{stem}_mask.png").size == original.size
    overlay = Image.open(out / f"{stem}_overlay.png")
    assert overlay.size == original.size
    assert overlay.mode == "RGB"


def test_predict_reports_bad_files(trained_workdir, tmp_path):
  workdir, folder = trained_workdir
  inputs = tmp_path / "inputs"
  inputs.mkdir()
  good = sorted((folder / "images").iterdir())[0]
  Image.open(good).save(inputs / "a.b.JPG", format="JPEG")
  (inputs / "x.png").write_text("not an image")
  data = good.read_bytes()
  (inputs / "truncated.png").write_bytes(data[: len(data) // 3])
  out = tmp_path / "out"
  status = cli.main(["predict", "--workdir", str(workdir), "--output_dir", str(out),
                     str(inputs)])
  assert status == 1
  assert (out / "a.b.json").exists()
  assert not (out / "x.json").exists()
  assert not (out / "truncated.json").exists()


def test_evaluate_split_writes_csv(trained_workdir, tmp_path):
  workdir, _ = trained_workdir
  out = tmp_path / "eval"
  status = cli.main(["evaluate", "--workdir", str(workdir), "--split", "test",
                     "--output_dir", str(out)])
  assert status == 0
  with open(out / "metrics.csv") as f:
    rows = list(csv.DictReader(f))
  assert rows
  assert {row["organ"] for row in rows} == {"right_lung", "left_lung"}
  assert all(row["unit"] == "px" for row in rows)
  assert all(0.0 <= float(row["dice"]) <= 1.0 for row in rows)


def test_evaluate_folders_mode(trained_workdir, tmp_path):
  workdir, folder = trained_workdir
  images = sorted((folder / "images").iterdir())[:2]
  predictions = tmp_path / "predictions"
  assert cli.main(["predict", "--workdir", str(workdir), "--output_dir", str(predictions),
                   "--no_overlay", *map(str, images)]) == 0
  metadata = tmp_path / "metadata.json"
  metadata.write_text(json.dumps(
      {"organs": [{"name": "right_lung", "label": 1}, {"name": "left_lung", "label": 2}]}))
  status = cli.main(["evaluate", "--predictions", str(predictions),
                     "--masks", str(folder / "masks"), "--metadata", str(metadata)])
  assert status == 0
  with open(predictions / "metrics.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 2 * len(images)


def test_unknown_config_key_exits_with_message(tmp_path, capsys):
  status = cli.main(["train", "--workdir", str(tmp_path), "--config.optim.lerning_rate=1"])
  assert status == 2
  assert 'Did you mean "optim.learning_rate"' in capsys.readouterr().err
