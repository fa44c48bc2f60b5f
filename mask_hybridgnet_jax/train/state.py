"""Train state, optimizer and model initialisation."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from mask_hybridgnet_jax.losses.schedules import learning_rate_schedule


class TrainState(train_state.TrainState):
  """Flax TrainState plus normalisation statistics and the run's PRNG key.

  Attributes:
    batch_stats: BatchNorm running statistics; an empty dict unless the
      encoder uses batch normalisation.
    rng: raw uint32 PRNG key of the run. Each step folds in its step number,
      so a resumed run draws exactly the same augmentations and latents.
  """

  batch_stats: Any = flax.struct.field(default_factory=dict)
  rng: jax.Array | None = None


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with coupled L2 decay: decay * params joins the gradient before Adam.

  This is the PyTorch `Adam(weight_decay=...)` behaviour of the reference, not
  AdamW's decoupled decay.
  """
  schedule = learning_rate_schedule(
      config.optim, config.train.batch_size, config.train.total_examples)
  return optax.chain(
      optax.add_decayed_weights(config.optim.weight_decay),
      optax.scale_by_adam(),
      optax.scale_by_learning_rate(schedule),
  )


def create_train_state(
    model: flax.linen.Module,
    config: ml_collections.ConfigDict,
    rng: jax.Array,
) -> TrainState:
  """Initialise parameters from `rng` and wrap them in a TrainState."""
  init_rng, latent_rng, run_rng = jax.random.split(rng, 3)
  size = config.dataset.image_size
  images = jnp.zeros((1, size, size, config.model.input_channels), jnp.float32)
  variables = model.init({"params": init_rng, "latent": latent_rng}, images, train=False)
  return TrainState.create(
      apply_fn=model.apply,
      params=variables["params"],
      batch_stats=variables.get("batch_stats", {}),
      tx=make_optimizer(config),
      rng=run_rng,
  )


def abstract_train_state(model, config, rng) -> TrainState:
  """Shapes and dtypes of the train state, without allocating it."""
  return jax.eval_shape(lambda key: create_train_state(model, config, key), rng)


def parameter_shapes(params: Any) -> dict[str, list[int]]:
  """Flattened parameter path -> shape, for checkpoint compatibility checks."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  return {path: list(value.shape) for path, value in sorted(flat.items())}
