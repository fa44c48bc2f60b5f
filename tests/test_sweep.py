"""Sweep definitions, the sweep runner and the results table."""

import csv
import json
import os

import numpy as np
import pytest
from scipy import stats

from mask_hybridgnet_jax.datasets.synthetic import write_synthetic_dataset
from mask_hybridgnet_jax.sweep import (
    MEMBER_FILE, SweepError, collect_results, load_sweep, member_config, paired_wilcoxon,
    run_sweep)

CONFIG_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "configs")
TEST_CONFIG = os.path.join(CONFIG_DIR, "test.py")
# One train step of two images at input 32 keeps each member to seconds.
TINY = ["train.total_examples=2", "train.batch_size=2", "train.eval_every_steps=1",
        "dataset.image_size=32", "model.cheb_k=2"]


def _write_config(tmp_path, body):
  path = tmp_path / "sweep_config.py"
  path.write_text(
      "from mask_hybridgnet_jax.defaults import default_config\n\n"
      "def get_config():\n  return default_config()\n\n" + body)
  return str(path)


def test_load_sweep_of_test_config():
  members = load_sweep(TEST_CONFIG)
  assert [m.name for m in members] == ["baseline", "dual_unified"]
  assert members[1].overrides == {"model.dual": True, "graph.representation": "unified"}


@pytest.mark.parametrize("name", ["montgomery.py", "psfhs.py"])
def test_dataset_sweep_configs_load(name):
  path = os.path.join(CONFIG_DIR, name)
  members = load_sweep(path)
  assert [m.name for m in members][:3] == ["baseline", "unified", "no_raster"]
  for member in members:
    config = member_config(path, member, [])
    for key, value in member.overrides.items():
      section, field = key.split(".")
      assert config[section][field] == value, (member.name, key)


def test_duplicate_member_rejected(tmp_path):
  path = _write_config(tmp_path, "def sweep(add):\n  add('a')\n  add('a')\n")
  with pytest.raises(SweepError, match="added twice"):
    load_sweep(path)


def test_missing_sweep_function_rejected(tmp_path):
  path = _write_config(tmp_path, "")
  with pytest.raises(SweepError, match="def sweep"):
    load_sweep(path)


def test_unknown_override_key_names_member(tmp_path):
  path = _write_config(tmp_path, "def sweep(add):\n  add('typo', {'model.laten_dim': 8})\n")
  member = load_sweep(path)[0]
  with pytest.raises(SweepError, match="'typo'.*model.laten_dim"):
    member_config(path, member, [])


def test_paired_wilcoxon_matches_scipy():
  a = [0.91, 0.85, 0.88, 0.93, 0.80, 0.87]
  b = [0.90, 0.82, 0.89, 0.90, 0.75, 0.86]
  assert paired_wilcoxon(a, b) == pytest.approx(stats.wilcoxon(a, b).pvalue)


def test_paired_wilcoxon_drops_nan_pairs():
  a = [0.91, np.nan, 0.88, 0.93, 0.80, 0.87, 0.5]
  b = [0.90, 0.82, 0.89, 0.90, 0.75, 0.86, np.nan]
  expected = stats.wilcoxon([0.91, 0.88, 0.93, 0.80, 0.87], [0.90, 0.89, 0.90, 0.75, 0.86])
  assert paired_wilcoxon(a, b) == pytest.approx(expected.pvalue)


def test_paired_wilcoxon_identical_is_one():
  assert paired_wilcoxon([0.5, 0.6], [0.5, 0.6]) == 1.0


def _write_member(sweep_dir, name, rows):
  workdir = os.path.join(sweep_dir, name)
  os.makedirs(os.path.join(workdir, "eval_test"))
  with open(os.path.join(workdir, "eval_test", "metrics.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "organ", "dice", "hausdorff", "assd", "unit"])
    writer.writerows(rows)
  with open(os.path.join(workdir, MEMBER_FILE), "w") as f:
    json.dump({"name": name, "overrides": {}, "metrics_csv": "eval_test/metrics.csv",
               "command": f"run {name}"}, f)


def test_collect_results_hand_made(tmp_path):
  sweep_dir = str(tmp_path)
  with open(os.path.join(sweep_dir, "sweep.json"), "w") as f:
    json.dump({"split": "test", "members": [{"name": "base", "overrides": {}},
                                            {"name": "other", "overrides": {}}]}, f)
  base_dice = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
  other_dice = [0.95, 0.86, 0.72, 0.69, 0.51, 0.47]
  _write_member(sweep_dir, "base", [
      (f"im{i}", "lung", d, 10.0, 2.0, "mm") for i, d in enumerate(base_dice)])
  _write_member(sweep_dir, "other", [
      (f"im{i}", "lung", d, 12.0 if i else "", 2.0, "mm") for i, d in enumerate(other_dice)])
  table = collect_results(sweep_dir, "base")
  lines = [line for line in table.splitlines() if line.startswith("| other")]
  cells = [c.strip() for c in lines[0].strip("|").split("|")]
  mean, sd = np.mean(other_dice), np.std(other_dice, ddof=1)
  p = stats.wilcoxon(other_dice, base_dice).pvalue
  assert cells[:3] == ["other", "lung", "6"]
  assert cells[3] == f"{mean:.4f} ± {sd:.4f}"
  assert cells[4] == f"{p:.3f}"
  assert cells[5] == "12.00 ± 0.00 (1 NaN)"
  assert cells[7] == "2.00 ± 0.00"
  assert cells[8] == "1.000"
  assert os.path.exists(os.path.join(sweep_dir, "results.md"))


def test_collect_results_unknown_baseline(tmp_path):
  with open(tmp_path / "sweep.json", "w") as f:
    json.dump({"members": [{"name": "a", "overrides": {}}]}, f)
  with pytest.raises(SweepError, match="'b' is not a member"):
    collect_results(str(tmp_path), "b")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
  return str(write_synthetic_dataset(
      tmp_path_factory.mktemp("sweep_data") / "data", num_images=6, size=40, seed=0))


def test_two_member_sweep_produces_table(tiny_dataset, tmp_path):
  sweep_dir = str(tmp_path / "sweep")
  common = [f"dataset.manual_dir={tiny_dataset}", *TINY]
  status = run_sweep(TEST_CONFIG, sweep_dir, common, eval_batch_size=2)
  assert status == {"baseline": "done", "dual_unified": "done"}
  table = collect_results(sweep_dir, "baseline")
  rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
  organs = {line.split("|")[2].strip() for line in rows}
  assert len(rows) == 2 * len(organs)
  assert "python experiments/run_sweep.py --config" in table

  # A rerun skips both finished members.
  again = run_sweep(TEST_CONFIG, sweep_dir, common, eval_batch_size=2)
  assert again == {"baseline": "skipped", "dual_unified": "skipped"}


def test_sweep_rejects_changed_settings(tiny_dataset, tmp_path):
  sweep_dir = str(tmp_path / "sweep")
  os.makedirs(sweep_dir)
  with open(os.path.join(sweep_dir, "sweep.json"), "w") as f:
    json.dump({"config": TEST_CONFIG, "common_overrides": ["train.seed=1"], "split": "test",
               "members": []}, f)
  with pytest.raises(SweepError, match="common_overrides"):
    run_sweep(TEST_CONFIG, sweep_dir, ["train.seed=2"])
