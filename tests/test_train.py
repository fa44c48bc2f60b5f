"""Training loop: single compilation, exact resume, checkpoint checks, overfitting."""

import json
import os

import chex
import jax
import numpy as np
import pytest

from mask_hybridgnet_jax.config_utils import load_config_file
from mask_hybridgnet_jax.datasets.common import read_split
from mask_hybridgnet_jax.datasets.synthetic import write_synthetic_dataset
from mask_hybridgnet_jax.input_pipeline import BatchIterator, device_batch
from mask_hybridgnet_jax.train import checkpoint as checkpoint_lib
from mask_hybridgnet_jax.train import loop
from mask_hybridgnet_jax.train.state import create_train_state
from mask_hybridgnet_jax.train.step import make_train_step

CONFIG_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "configs")


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
  return str(write_synthetic_dataset(
      tmp_path_factory.mktemp("synthetic") / "data", num_images=8, size=80, seed=0))


def _test_config(manual_dir):
  config = load_config_file(os.path.join(CONFIG_DIR, "test.py"))
  config.dataset.manual_dir = manual_dir
  return config


def test_train_step_compiles_once(synthetic_dir, tmp_path):
  config = _test_config(synthetic_dir)
  experiment = loop.build_experiment(config, str(tmp_path))
  state = create_train_state(experiment.model, config, jax.random.PRNGKey(0))
  step = make_train_step(experiment.model, experiment.template, config, experiment.metadata)
  step = jax.jit(chex.assert_max_traces(step, n=1))
  source = read_split(experiment.builder, "train")
  with BatchIterator(source, config.train.batch_size, experiment.stats["points_budget"],
                     seed=0) as batches:
    for _ in range(3):
      state, metrics = step(state, device_batch(next(batches)))
  assert int(state.step) == 3
  assert np.isfinite(float(metrics["loss"]))


def test_unified_prior_is_mean_contour(synthetic_dir, tmp_path):
  # The synthetic organs do not touch, so no node is shared and the unified
  # prior must hold exactly the independent mean contour's points, only in
  # the ring order of the template mask.
  config = _test_config(synthetic_dir)
  priors = {}
  for representation in ("independent", "unified"):
    config.graph.representation = representation
    experiment = loop.build_experiment(config, str(tmp_path / representation))
    state = create_train_state(experiment.model, config, jax.random.PRNGKey(0))
    priors[representation] = np.asarray(state.params["decoder"]["shape_prior"])
  independent, unified = (np.unique(priors[r].round(6), axis=0)
                          for r in ("independent", "unified"))
  assert len(unified) == len(priors["unified"])
  np.testing.assert_allclose(unified, independent, atol=1e-6)


def test_config_builder_passes_builder_options(monkeypatch, tmp_path):
  # Evaluation and the analysis commands load the dataset through this
  # helper, so they must read the variant that training prepared.
  calls = []
  monkeypatch.setattr(loop, "load_builder", lambda name, **kwargs: calls.append((name, kwargs)))
  config = load_config_file(os.path.join(CONFIG_DIR, "jsrt_mask2graph.py"))
  config.dataset.builder_options.mask_size = 256
  loop.load_config_builder(config, str(tmp_path / "run"))
  name, kwargs = calls[0]
  assert name == "jsrt_contours"
  assert kwargs["builder_options"] == {"mask_size": 256}
  assert kwargs["data_dir"] == os.path.join(str(tmp_path / "run"), loop.DATA_DIR)


def test_workdir_contents(synthetic_dir, tmp_path):
  config = _test_config(synthetic_dir)
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(config, workdir)
  assert np.isfinite(result["val_loss"])
  for name in ("config.json", "topology.json", "metrics.jsonl", "checkpoints", "best"):
    assert os.path.exists(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  train_steps = [r["step"] for r in records if "loss" in r]
  assert train_steps == [2, 4, 6, 8]
  assert any("val_loss" in r for r in records)
  assert any("compile_seconds" in r for r in records)


class _Interrupt(Exception):
  pass


def _latest_params(workdir):
  manager = checkpoint_lib.ocp.CheckpointManager(
      os.path.join(workdir, checkpoint_lib.LATEST_DIR))
  step = manager.latest_step()
  restored = manager.restore(step, args=checkpoint_lib.ocp.args.Composite(
      state=checkpoint_lib.ocp.args.StandardRestore()))
  manager.close()
  return step, restored["state"]


def test_resume_matches_uninterrupted_run(synthetic_dir, tmp_path, monkeypatch):
  config = _test_config(synthetic_dir)
  config.dataset.data_dir = str(tmp_path / "data")
  straight = str(tmp_path / "straight")
  loop.train_and_evaluate(config, straight)

  # Kill the second run after 6 of its 8 steps; checkpoints exist at step 4.
  interrupted = str(tmp_path / "interrupted")
  original_next = BatchIterator.__next__
  calls = {"count": 0}

  def failing_next(self):
    calls["count"] += 1
    if calls["count"] > 6:
      raise _Interrupt()
    return original_next(self)

  monkeypatch.setattr(BatchIterator, "__next__", failing_next)
  with pytest.raises(_Interrupt):
    loop.train_and_evaluate(config, interrupted)
  monkeypatch.setattr(BatchIterator, "__next__", original_next)
  assert _latest_params(interrupted)[0] == 4

  loop.train_and_evaluate(config, interrupted)
  step_a, state_a = _latest_params(straight)
  step_b, state_b = _latest_params(interrupted)
  assert step_a == step_b == 8
  chex.assert_trees_all_close(state_a["params"], state_b["params"], rtol=1e-6, atol=1e-7)
  with open(os.path.join(interrupted, "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f if '"loss"' in line]
  # Lines logged after the step-4 checkpoint were dropped on resume, not repeated.
  assert steps == [2, 4, 6, 8]


def test_changed_config_in_workdir_rejected(synthetic_dir, tmp_path):
  config = _test_config(synthetic_dir)
  workdir = str(tmp_path / "run")
  config.train.total_examples = 4
  loop.train_and_evaluate(config, workdir)
  config.model.latent_dim = 8
  with pytest.raises(loop.WorkdirConfigMismatchError, match="model.latent_dim"):
    loop.train_and_evaluate(config, workdir)


def test_checkpoint_mismatch_lists_differences(synthetic_dir, tmp_path):
  config = _test_config(synthetic_dir)
  config.train.total_examples = 4
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config, workdir)

  other = _test_config(synthetic_dir)
  other.graph.node_overrides.right_lung = 128
  experiment = loop.build_experiment(other, workdir)
  target = create_train_state(experiment.model, other, jax.random.PRNGKey(0))
  meta = checkpoint_lib.build_meta(other.to_dict(), experiment.template.to_dict(),
                                   experiment.metadata.to_dict(), target.params)
  checkpointer = checkpoint_lib.Checkpointer(workdir, keep=2)
  with pytest.raises(checkpoint_lib.CheckpointMismatchError) as error:
    checkpointer.restore_latest(target, meta)
  checkpointer.close()
  message = str(error.value)
  assert "organ 'right_lung'" in message
  assert "nodes in the checkpoint, 128 in the config" in message
  assert "parameter decoder/latent_to_nodes/kernel" in message


def test_overfit_four_real_images(montgomery_dir, tmp_path):
  """Four real Montgomery images: the nodes must reach the lung boundaries."""
  folder = tmp_path / "montgomery"
  for sub in ("images", "masks"):
    (folder / sub).mkdir(parents=True)
    for name in sorted(os.listdir(montgomery_dir / sub))[:4]:
      os.symlink(montgomery_dir / sub / name, folder / sub / name)
  config = load_config_file(os.path.join(CONFIG_DIR, "montgomery.py"))
  config.dataset.manual_dir = str(folder)
  config.dataset.image_size = 64
  config.model.filters = 8
  config.model.latent_dim = 16
  config.augment.enabled = False
  config.loss.raster_enabled = False
  experiment = loop.build_experiment(config, str(tmp_path))
  source = []
  for split in ("train", "validation", "test"):
    data = read_split(experiment.builder, split)
    source += [data[i] for i in range(len(data))]
  assert len(source) == 4
  config.train.batch_size = 4
  config.train.total_examples = 4 * OVERFIT_STEPS
  state = create_train_state(experiment.model, config, jax.random.PRNGKey(0))
  step = jax.jit(make_train_step(experiment.model, experiment.template, config,
                                 experiment.metadata))
  with BatchIterator(source, 4, experiment.stats["points_budget"], seed=0) as batches:
    batch = device_batch(next(batches))
  state, metrics = step(state, batch)
  first = float(metrics["chamfer_final"])
  for _ in range(OVERFIT_STEPS - 1):
    state, metrics = step(state, batch)

  # Chamfer of the final nodes, summed over the two lungs, in normalised units.
  final = float(metrics["chamfer_final"])
  assert final < first / 20
  # Root mean square node-to-boundary distance in pixels of the 64-pixel
  # input; 4.2 px was measured after 300 steps (jax 0.10.2, CPU).
  rms_pixels = np.sqrt(final / 4) * 64
  assert rms_pixels < 6.0


# NOTE: Dice of the filled graphs is not asserted. After this many steps the
# nodes lie on the boundaries but not yet in ring order, so their polygons
# self-intersect. docs/results.md describes the same effect on Montgomery.
OVERFIT_STEPS = 300
