"""Bad inputs and interrupted runs: the cases not covered by the per-module tests.

docs/robustness.md lists every case with the test that checks it, here or in
the test file of the module concerned.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from mask_hybridgnet_jax import cli, config_utils, contours, evaluate, metrics, preprocess
from mask_hybridgnet_jax.contours import DegenerateContourError
from mask_hybridgnet_jax.datasets.synthetic import write_synthetic_dataset
from mask_hybridgnet_jax.io.images import read_image, read_label_map
from mask_hybridgnet_jax.losses import raster
from mask_hybridgnet_jax.organs import Organ
from mask_hybridgnet_jax.train import checkpoint as checkpoint_lib

PROJECT_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
TEST_CONFIG = os.path.join(PROJECT_ROOT, "configs", "test.py")

# Masks to contours.


def _blob_label_map() -> np.ndarray:
  """A 40 x 40 {0, 1} map with one irregular component (a disk with a notch)."""
  rows, cols = np.indices((40, 40))
  disk = (rows - 20) ** 2 + (cols - 18) ** 2 <= 14 ** 2
  disk[18:23, 25:] = False
  return disk.astype(np.uint8)


def test_label_png_01_and_255_same_contour(tmp_path):
  binary = _blob_label_map()
  Image.fromarray(binary).save(tmp_path / "ones.png")
  Image.fromarray(binary * 255).save(tmp_path / "full_range.png")
  organ = (Organ("liver", 1),)
  traced = []
  for name in ("ones.png", "full_range.png"):
    path = str(tmp_path / name)
    masks = contours.organ_masks(read_label_map(path), organ, source=path)
    points, _ = contours.extract_contour(masks[0], source=path, organ="liver")
    traced.append(points)
  assert traced[0] is not None
  assert np.array_equal(traced[0], traced[1])


def test_line_only_mask_raises():
  mask = np.zeros((64, 64), dtype=bool)
  mask[30, 10:15] = True
  with pytest.raises(DegenerateContourError, match=r"line\.png: organ 'heart'.*degenerate"):
    contours.extract_contour(mask, source="line.png", organ="heart")


# Rasteriser.


@functools.partial(jax.jit, static_argnames="tau")
def _mask_and_gradient(polygon, weights, tau=0.1):
  """Soft mask of a 64 x 64 image and the gradient of sum(mask * weights)."""
  def weighted_sum(p):
    mask = raster.soft_rasterize(p, 64, 64, tau)
    return jnp.sum(mask * weights), mask

  (_, mask), grad = jax.value_and_grad(weighted_sum, has_aux=True)(polygon)
  return mask, grad


WEIGHTS = np.random.default_rng(0).uniform(size=(64, 64)).astype(np.float32)
SQUARE = [[16, 16], [48, 16], [48, 48], [16, 48]]


@pytest.mark.parametrize("name, polygon", [
    ("square with a duplicate vertex", [[16, 16], [16, 16], [48, 16], [48, 48], [16, 48]]),
    ("all nodes at one point", [[20, 20]] * 5),
    ("all nodes at x = -50", [[-50, 10], [-50, 40], [-50, 25], [-50, 60]]),
])
def test_degenerate_polygon_mask_and_gradient(name, polygon):
  with jax.debug_nans(True):
    mask, grad = _mask_and_gradient(jnp.asarray(polygon, jnp.float32), WEIGHTS)
  assert bool(jnp.all(jnp.isfinite(mask))), name
  assert float(jnp.min(mask)) >= 0.0, name
  assert float(jnp.max(mask)) <= 1.0, name
  assert bool(jnp.all(jnp.isfinite(grad))), name


def test_duplicate_vertex_square_same_hard_mask():
  duplicate, _ = _mask_and_gradient(
      jnp.asarray([SQUARE[0]] + SQUARE, jnp.float32), WEIGHTS)
  plain, _ = _mask_and_gradient(jnp.asarray(SQUARE, jnp.float32), WEIGHTS)
  np.testing.assert_array_equal(np.asarray(duplicate) > 0.5, np.asarray(plain) > 0.5)
  np.testing.assert_allclose(np.asarray(duplicate), np.asarray(plain), atol=1e-6)


def test_nodes_outside_image_leave_mask_empty():
  mask, _ = _mask_and_gradient(
      jnp.asarray([[-50, 10], [-50, 40], [-50, 25], [-50, 60]], jnp.float32), WEIGHTS)
  assert float(jnp.max(mask)) < 0.5


@pytest.mark.parametrize("num_vertices", [255, 256, 257, 1025])
def test_chunked_raster_matches_dense(num_vertices):
  angles = np.linspace(0.0, 2 * np.pi, num_vertices, endpoint=False)
  radii = 20.0 + 6.0 * np.sin(5 * angles)
  polygon = jnp.asarray(
      np.stack([32 + radii * np.cos(angles), 32 + radii * np.sin(angles)], axis=1), jnp.float32)
  chunked = raster.soft_rasterize(polygon, 48, 48, 0.1, chunk_size=256)
  dense = raster.soft_rasterize_dense(polygon, 48, 48, 0.1)
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(dense), atol=1e-6)


# Metrics.


def test_empty_prediction_csv_leaves_distances_blank(tmp_path):
  truth = np.zeros((1, 32, 32), dtype=bool)
  truth[0, 10:20, 10:20] = True
  empty = np.zeros_like(truth)
  rows = [{"id": "case_1", **row}
          for row in metrics.evaluate_organs(empty, truth, ["liver"])]
  rows += [{"id": "case_2", **row}
           for row in metrics.evaluate_organs(empty, empty, ["liver"])]
  paths = evaluate.write_results(rows, str(tmp_path))
  with open(paths["csv"], newline="") as f:
    written = list(csv.DictReader(f))
  assert float(written[0]["dice"]) == 0.0
  assert written[0]["hausdorff"] == ""
  assert written[0]["assd"] == ""
  assert float(written[1]["dice"]) == 1.0
  assert float(written[1]["hausdorff"]) == 0.0
  assert float(written[1]["assd"]) == 0.0
  assert metrics.summarize(rows)["liver"]["missing_distances"] == 1
  with open(paths["summary"]) as f:
    assert metrics.EMPTY_MASK_POLICY in f.read()


# Images.


def test_16bit_png_normalised_by_real_range(tmp_path):
  path = tmp_path / "wide.png"
  Image.fromarray(np.array([[0, 300], [4196, 65535]], dtype=np.uint16)).save(path)
  normalised = preprocess.normalize_intensity(read_image(path))
  expected = np.array([[0.0, 300.0], [4196.0, 65535.0]]) / 65535.0
  np.testing.assert_allclose(normalised, expected, rtol=1e-6)


# Configs.


def _write_config(path, body: str) -> str:
  path.write_text(
      "from mask_hybridgnet_jax.defaults import default_config\n\n"
      "def get_config():\n"
      "  config = default_config()\n"
      f"{body}"
      "  return config\n")
  return str(path)


def test_config_file_misspelt_key_names_nearest(tmp_path):
  path = _write_config(tmp_path / "typo.py", "  config.optim.lerning_rate = 1.0\n")
  with pytest.raises(config_utils.ConfigError,
                     match='unknown key "optim.lerning_rate" .did you mean "optim.learning_rate"'):
    config_utils.load_config_file(path)


def test_config_file_missing_key_named(tmp_path):
  path = _write_config(tmp_path / "short.py", '  del config.train["batch_size"]\n')
  with pytest.raises(config_utils.ConfigError, match='missing key "train.batch_size"'):
    config_utils.load_config_file(path)


def test_config_file_node_overrides_free_form(tmp_path):
  path = _write_config(tmp_path / "nodes.py", "  config.graph.node_overrides.spleen = 32\n")
  assert config_utils.load_config_file(path).graph.node_overrides.spleen == 32


def test_cli_top_level_typo_names_nearest(tmp_path, capsys):
  status = cli.main(["train", "--workdir", str(tmp_path), "--config.lerning_rate=1"])
  error = capsys.readouterr().err
  assert status == 2
  assert 'unknown config key "lerning_rate"' in error
  assert 'Did you mean "optim.learning_rate"' in error


def test_cli_rejects_config_file_typo(tmp_path, capsys):
  path = _write_config(tmp_path / "typo.py", "  config.train.batch_sise = 4\n")
  status = cli.main(["train", "--config", path, "--workdir", str(tmp_path / "run")])
  assert status == 2
  assert 'did you mean "train.batch_size"' in capsys.readouterr().err


# Interrupted training and prediction on bad files, both on one small run.

# Runs `mask-hybridgnet train ARGS...` and kills the process (os._exit, so no
# cleanup handler runs) when Orbax has written every file of checkpoint STEP
# and is about to rename its temporary folder to the final name.
_KILL_DURING_SAVE = """
import os, sys
from orbax.checkpoint._src.path import atomicity
from mask_hybridgnet_jax import cli

kill_step = sys.argv[1]
original_finalize = atomicity.AtomicRenameTemporaryPath.finalize

async def finalize_or_exit(self):
  final = self.get_final()
  if final.parent.name == "checkpoints" and final.name == kill_step:
    os._exit(137)
  return await original_finalize(self)

atomicity.AtomicRenameTemporaryPath.finalize = finalize_or_exit
sys.exit(cli.main(sys.argv[2:]))
"""

# Three steps of two examples and a checkpoint after every step, so the kill
# at step 2 comes after a complete checkpoint at step 1. Validation runs only
# after step 3, so the killed process never compiles the eval step.
_TRAIN_OVERRIDES = [
    "--config.train.total_examples=6",
    "--config.train.checkpoint_every_steps=1",
    "--config.train.eval_every_steps=3",
]
KILL_STEP = 2


def _tmp_folders(folder) -> list[str]:
  return sorted(name for name in os.listdir(folder) if "tmp" in name)


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
  """A run killed while saving step KILL_STEP, then the same command run again."""
  root = tmp_path_factory.mktemp("interrupted")
  data = write_synthetic_dataset(root / "data", num_images=8, size=64, seed=0)
  workdir = root / "run"
  argv = ["train", "--config", TEST_CONFIG, "--workdir", str(workdir),
          f"--config.dataset.manual_dir={data}", *_TRAIN_OVERRIDES]
  env = dict(os.environ, PYTHONPATH=PROJECT_ROOT, JAX_PLATFORMS="cpu",
             JAX_DISABLE_MOST_OPTIMIZATIONS="true")
  killed = subprocess.run([sys.executable, "-c", _KILL_DURING_SAVE, str(KILL_STEP), *argv],
                          env=env, capture_output=True, text=True, timeout=600)

  checkpoints = workdir / checkpoint_lib.LATEST_DIR
  after_kill = {
      "returncode": killed.returncode,
      "stderr": killed.stderr,
      "tmp_folders": _tmp_folders(checkpoints),
  }
  manager = ocp.CheckpointManager(str(checkpoints))
  after_kill["latest_step"] = manager.latest_step()
  restored = manager.restore(KILL_STEP - 1, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))["state"]
  manager.close()
  after_kill["restored_step"] = int(restored["step"])

  status = cli.main(argv)
  return {"workdir": workdir, "data": data, "after_kill": after_kill, "status": status}


def test_kill_during_save_happened(interrupted_run):
  after_kill = interrupted_run["after_kill"]
  assert after_kill["returncode"] == 137, after_kill["stderr"][-2000:]
  assert after_kill["tmp_folders"] == [f"{KILL_STEP}.orbax-checkpoint-tmp"]


def test_previous_checkpoint_restores_after_kill(interrupted_run):
  assert interrupted_run["after_kill"]["latest_step"] == KILL_STEP - 1
  assert interrupted_run["after_kill"]["restored_step"] == KILL_STEP - 1


def test_rerun_resumes_and_finishes(interrupted_run):
  workdir = interrupted_run["workdir"]
  assert interrupted_run["status"] == 0
  manager = ocp.CheckpointManager(str(workdir / checkpoint_lib.LATEST_DIR))
  assert manager.latest_step() == 3
  manager.close()
  with open(workdir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  compiles = [r["step"] for r in records if "compile_seconds" in r]
  # The first run compiled before step 1 and the rerun, resumed at step 1,
  # before step 2. Lines the killed run logged after step 1 were dropped.
  assert compiles == [1, 2]
  assert [r["step"] for r in records if "loss" in r] == [2, 3]


def test_rerun_leaves_no_temporary_folders(interrupted_run):
  workdir = interrupted_run["workdir"]
  assert _tmp_folders(workdir / checkpoint_lib.LATEST_DIR) == []
  assert _tmp_folders(workdir / checkpoint_lib.BEST_DIR) == []


def test_checkpointer_deletes_leftover_temporary_folders(tmp_path):
  # A kill between two saves of different steps leaves a folder that no later
  # save of the same step replaces.
  for sub in (checkpoint_lib.LATEST_DIR, checkpoint_lib.BEST_DIR):
    leftover = tmp_path / sub / "5.orbax-checkpoint-tmp"
    leftover.mkdir(parents=True)
    (leftover / "partial").write_bytes(b"\0" * 16)
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=2)
  checkpointer.close()
  assert _tmp_folders(tmp_path / checkpoint_lib.LATEST_DIR) == []
  assert _tmp_folders(tmp_path / checkpoint_lib.BEST_DIR) == []


@pytest.fixture(scope="module")
def bad_folder_prediction(interrupted_run, tmp_path_factory):
  """`predict` on a folder with one good PNG, a.b.JPG and two unreadable files."""
  root = tmp_path_factory.mktemp("predict")
  inputs = root / "inputs"
  inputs.mkdir()
  source = sorted((interrupted_run["data"] / "images").iterdir())[0]
  Image.open(source).save(inputs / "good.png")
  Image.open(source).convert("RGB").save(inputs / "a.b.JPG", format="JPEG")
  (inputs / "x.png").write_text("not an image\n")
  data = (inputs / "good.png").read_bytes()
  (inputs / "truncated.png").write_bytes(data[: len(data) // 2])
  output = root / "output"
  argv = ["predict", "--workdir", str(interrupted_run["workdir"]),
          "--output_dir", str(output), str(inputs)]
  return {"argv": argv, "output": output}


def test_predict_bad_files_summary(bad_folder_prediction, capsys):
  status = cli.main(bad_folder_prediction["argv"])
  captured = capsys.readouterr()
  output = bad_folder_prediction["output"]
  assert status == 1
  assert "predicted 2 of 4 images" in captured.out
  assert "2 image(s) failed" in captured.err
  failures = {line.strip().split(": ", 1)[0].rsplit(os.sep, 1)[-1]: line
              for line in captured.err.splitlines() if line.startswith("  ")}
  assert set(failures) == {"truncated.png", "x.png"}
  assert "truncated or corrupt image" in failures["truncated.png"]
  assert "not a recognised image file" in failures["x.png"]
  for stem in ("good", "a.b"):
    assert (output / f"{stem}.json").is_file(), stem
    assert (output / f"{stem}_mask.png").is_file(), stem
  assert sorted(os.listdir(output)) == [
      "a.b.json", "a.b_mask.png", "a.b_overlay.png",
      "good.json", "good_mask.png", "good_overlay.png"]
