"""Performance options: bfloat16 encoder, compile counts, multi-host batch placement."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import multidevice_worker as worker
from mask_hybridgnet_jax.models.hybridgnet import build_model
from mask_hybridgnet_jax.predict import Predictor, TrainedModel
from mask_hybridgnet_jax.train import sharding
from mask_hybridgnet_jax.train.state import create_train_state
from mask_hybridgnet_jax.train.step import make_train_step


def test_bfloat16_train_step_gives_finite_loss():
  config, template, _ = worker.build_setup()
  config.model.dtype = "bfloat16"
  # Start the rasterisation loss at step 0, so that this one step runs it.
  config.loss.raster_start_fraction = 0.0
  model = build_model(config.model, template)
  state = create_train_state(model, config, jax.random.PRNGKey(0))
  step = jax.jit(make_train_step(model, template, config, worker.METADATA))
  batch = worker.make_batches(config, num_batches=1)[0]
  new_state, metrics = step(state, batch)
  assert np.isfinite(float(metrics["loss"]))
  assert float(metrics["raster_dice"]) > 0.0
  assert metrics["raster_dice"].dtype == jnp.float32
  assert np.isfinite(float(metrics["grad_norm"]))
  assert float(metrics["update_norm"]) > 0.0
  # Parameters stay float32; only the encoder's computation is bfloat16.
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new_state.params))


class _TraceCountingModel:
  """Delegates to a flax model and counts `apply` calls, which happen once per trace."""

  def __init__(self, model):
    self.model = model
    self.applies = 0

  def apply(self, *args, **kwargs):
    self.applies += 1
    return self.model.apply(*args, **kwargs)


def test_predict_mixed_sizes_compiles_once():
  config, template, model = worker.build_setup()
  state = create_train_state(model, config, jax.random.PRNGKey(0))
  counting = _TraceCountingModel(model)
  trained = TrainedModel(config, template, worker.METADATA, counting,
                         {"params": state.params}, step=0, checkpoint_dir="")
  predictor = Predictor(trained, batch_size=2)
  rng = np.random.default_rng(0)
  shapes = [(50, 70), (90, 40), (64, 64), (33, 120), (200, 180)]
  images = [rng.random(shape, dtype=np.float32) for shape in shapes]
  predictions = predictor.predict_images(images)
  assert len(predictions) == len(shapes)
  assert counting.applies == 1
  for prediction, (height, width) in zip(predictions, shapes):
    assert (prediction.transform.height, prediction.transform.width) == (height, width)


def test_shard_batch_multi_host_path_matches_device_put(monkeypatch):
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(0)
  batch = {"image": rng.random((2, 8, 8, 1), dtype=np.float32),
           "lengths": rng.integers(0, 9, (2, 3)).astype(np.int32)}
  expected = sharding.shard_batch(batch, mesh)
  # With more than one process, shard_batch builds each device's rows from
  # the global batch by callback instead of device_put.
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  placed = sharding.shard_batch(batch, mesh)
  for key in batch:
    np.testing.assert_array_equal(np.asarray(placed[key]), np.asarray(expected[key]))
    assert placed[key].sharding == expected[key].sharding


def test_batch_size_not_multiple_of_devices_rejected(monkeypatch):
  from mask_hybridgnet_jax import config_utils
  from mask_hybridgnet_jax.train import loop

  config, _, _ = worker.build_setup()
  config.dataset.manual_dir = os.getcwd()
  config.train.batch_size = 6
  monkeypatch.setattr(jax, "device_count", lambda: 4)
  with pytest.raises(config_utils.ConfigError, match="batch_size=6 must be a multiple of the 4"):
    loop.validate_config(config)
