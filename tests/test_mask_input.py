"""Mask-input mode: the encoder reads organ masks, and mask2graph turns label maps into graphs."""

import csv
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mask_hybridgnet_jax import cli
from mask_hybridgnet_jax import config_utils
from mask_hybridgnet_jax.config_utils import load_config_file
from mask_hybridgnet_jax.datasets.common import read_split
from mask_hybridgnet_jax.datasets.synthetic import write_synthetic_dataset
from mask_hybridgnet_jax.input_pipeline import BatchIterator, device_batch, iterate_eval_batches
from mask_hybridgnet_jax.io.atomic import write_png_atomic
from mask_hybridgnet_jax.io.images import read_label_map
from mask_hybridgnet_jax.predict import Predictor, TrainedModel, mask_files_to_graphs
from mask_hybridgnet_jax.train import loop
from mask_hybridgnet_jax.train.state import create_train_state
from mask_hybridgnet_jax.train.step import make_eval_step, make_train_step, model_inputs

CONFIG_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "configs")


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
  return str(write_synthetic_dataset(
      tmp_path_factory.mktemp("synthetic") / "data", num_images=8, size=80, seed=0))


def _mask_config(manual_dir):
  config = load_config_file(os.path.join(CONFIG_DIR, "test.py"))
  config.dataset.manual_dir = manual_dir
  config.input = "masks"
  config.model.input_channels = 2  # the synthetic data has two lungs
  return config


@pytest.fixture(scope="module")
def experiment(synthetic_dir, tmp_path_factory):
  config = _mask_config(synthetic_dir)
  return loop.build_experiment(config, str(tmp_path_factory.mktemp("run")))


def test_model_inputs_moves_masks_to_channels():
  masks = np.zeros((2, 3, 4, 4), np.float32)
  masks[1, 2, 0, 3] = 1.0
  batch = {"image": jnp.zeros((2, 4, 4, 1)), "masks": jnp.asarray(masks)}
  inputs = model_inputs(batch, "masks")
  assert inputs.shape == (2, 4, 4, 3)
  assert float(inputs[1, 0, 3, 2]) == 1.0
  assert float(jnp.sum(inputs)) == 1.0


def test_model_inputs_image_unchanged():
  image = jnp.arange(16.0).reshape(1, 4, 4, 1)
  assert model_inputs({"image": image, "masks": None}, "image") is image


def test_model_inputs_rejects_unknown_kind():
  with pytest.raises(ValueError, match="config.input"):
    model_inputs({"image": None, "masks": None}, "pixels")


def test_channel_mismatch_names_key(synthetic_dir, tmp_path):
  config = _mask_config(synthetic_dir)
  config.model.input_channels = 1
  with pytest.raises(config_utils.ConfigError, match="model.input_channels=2"):
    loop.build_experiment(config, str(tmp_path))


def test_mask_input_train_step_runs(experiment):
  config = experiment.config
  state = create_train_state(experiment.model, config, jax.random.PRNGKey(0))
  step = make_train_step(experiment.model, experiment.template, config, experiment.metadata)
  step = jax.jit(chex.assert_max_traces(step, n=1))
  source = read_split(experiment.builder, "train")
  with BatchIterator(source, config.train.batch_size, experiment.stats["points_budget"],
                     seed=0, prefetch=0) as batches:
    for _ in range(2):
      state, metrics = step(state, device_batch(next(batches)))
  assert int(state.step) == 2
  assert np.isfinite(float(metrics["loss"]))
  assert float(metrics["grad_norm"]) > 0.0


def test_mask_input_ignores_image(experiment):
  # The prediction of a mask-input model must not depend on the image.
  state = create_train_state(experiment.model, experiment.config, jax.random.PRNGKey(1))
  eval_step = jax.jit(make_eval_step(experiment.model, experiment.template, "masks"))
  source = read_split(experiment.builder, "validation")
  batch = next(iterate_eval_batches(source, 2, experiment.stats["points_budget"]))
  batch = device_batch(batch)
  changed = dict(batch, image=np.random.default_rng(0).random(batch["image"].shape, np.float32))
  variables = {"params": state.params}
  first = np.asarray(eval_step(variables, batch)["positions"])
  second = np.asarray(eval_step(variables, changed)["positions"])
  np.testing.assert_array_equal(first, second)


def _trained(experiment):
  state = create_train_state(experiment.model, experiment.config, jax.random.PRNGKey(2))
  return TrainedModel(experiment.config, experiment.template, experiment.metadata,
                      experiment.model, {"params": state.params}, 0, "untrained")


@pytest.fixture(scope="module")
def predictor(experiment):
  # One predictor for the module, so that its program compiles once.
  return Predictor(_trained(experiment), batch_size=2, num_samples=2)


def test_predict_label_maps_shapes(experiment, predictor):
  label_map = np.zeros((50, 70), np.uint8)
  label_map[10:40, 5:30] = 1
  label_map[10:40, 40:65] = 2
  predictions = predictor.predict_label_maps([label_map] * 3)
  assert len(predictions) == 3
  for name, count in zip(experiment.template.organ_names, experiment.template.node_counts):
    assert predictions[0].nodes[name].shape == (count, 2)
    assert predictions[2].std[name].shape == (count,)
  np.testing.assert_allclose(predictions[0].nodes["right_lung"],
                             predictions[2].nodes["right_lung"], atol=1e-5)


def test_mask_model_rejects_images(predictor):
  with pytest.raises(ValueError, match="mask2graph"):
    predictor.predict_images([np.zeros((32, 32), np.float32)])


def test_mask_files_to_graphs_writes_outputs(predictor, synthetic_dir, tmp_path):
  masks_dir = os.path.join(synthetic_dir, "masks")
  paths = [os.path.join(masks_dir, n) for n in sorted(os.listdir(masks_dir))[:2]]
  bad = tmp_path / "bad.png"
  label_map = read_label_map(paths[0]).astype(np.uint8)
  label_map[0, 0] = 7  # not an organ label
  write_png_atomic(bad, label_map)
  out = tmp_path / "out"
  report = mask_files_to_graphs(predictor, paths + [str(bad)], str(out))
  assert sorted(report.outputs) == sorted(paths)
  assert list(report.failures) == [str(bad)]
  assert "7" in report.failures[str(bad)]
  stem = os.path.splitext(os.path.basename(paths[0]))[0]
  assert (out / f"{stem}.json").exists()
  assert (out / f"{stem}_overlay.png").exists()
  assert len(report.fidelity) == 2 * 2
  assert all(0.0 <= row["dice"] <= 1.0 for row in report.fidelity)


def test_cli_mask2graph_missing_workdir(tmp_path):
  # A workdir without config.json is reported as an input error (exit status 2).
  status = cli.main(["mask2graph", str(tmp_path), "--workdir", str(tmp_path / "none"),
                     "--output_dir", str(tmp_path / "out")])
  assert status == 2
