"""Pure train and evaluation steps.

`make_train_step` and `make_eval_step` build them around a model, a graph
template and the loss config. Everything that varies per step is an
argument, so a run compiles each step once.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mask_hybridgnet_jax.augment import augment_batch
from mask_hybridgnet_jax.losses.chamfer import chamfer_loss
from mask_hybridgnet_jax.losses.objective import compute_loss
from mask_hybridgnet_jax.losses.schedules import loss_weights
from mask_hybridgnet_jax.organs import DatasetMetadata
from mask_hybridgnet_jax.topology import GraphTemplate
from mask_hybridgnet_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]

# Values of `config.input`: what the encoder reads.
INPUT_KINDS = ("image", "masks")


def model_inputs(batch: Batch, input_kind: str) -> jax.Array:
  """Select the encoder input of a batch.

  Args:
    batch: `image` `[B, S, S, 1]` and `masks` `[B, O, S, S]` in {0, 1}.
    input_kind: "image", or "masks" for the organ masks as channels `[B, S, S, O]`.
  """
  if input_kind == "image":
    return batch["image"]
  if input_kind == "masks":
    return jnp.moveaxis(batch["masks"], 1, -1).astype(jnp.float32)
  raise ValueError(f"config.input={input_kind!r} is invalid; use one of {list(INPUT_KINDS)}.")


def input_kind_of(config: ml_collections.ConfigDict) -> str:
  """Return `config.input`, "image" for configs saved before the key existed."""
  return config.get("input", "image")


def _variables(state_params, batch_stats) -> dict[str, Any]:
  variables = {"params": state_params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  return variables


def make_train_step(
    model,
    template: GraphTemplate,
    config: ml_collections.ConfigDict,
    metadata: DatasetMetadata,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """Build `train_step(state, batch) -> (state, metrics)` (not yet jitted).

  The step augments the batch on device, samples latents, computes the
  scheduled loss at `examples_seen = step * batch_size` and applies one
  optimizer update. Its randomness is `fold_in(state.rng, step)`.
  """
  batch_size = config.train.batch_size
  total_examples = config.train.total_examples
  uses_batch_norm = config.model.norm == "batch"
  input_kind = input_kind_of(config)

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    step_rng = jax.random.fold_in(state.rng, state.step)
    augment_rng, latent_rng = jax.random.split(step_rng)
    batch = augment_batch(
        augment_rng, batch, config.augment,
        allow_horizontal_flip=metadata.allow_horizontal_flip,
        allow_vertical_flip=metadata.allow_vertical_flip,
        allow_transpose=metadata.allow_transpose)
    # Augmented masks stay aligned with the points; gamma and noise touch only the image.
    inputs = model_inputs(batch, input_kind)
    examples_seen = state.step * batch_size
    weights = loss_weights(examples_seen, total_examples, config.loss)

    def loss_fn(params):
      variables = _variables(params, state.batch_stats)
      if uses_batch_norm:
        (positions, aux), updates = state.apply_fn(
            variables, inputs, train=True, rngs={"latent": latent_rng},
            mutable=["batch_stats"])
        new_batch_stats = updates["batch_stats"]
      else:
        positions, aux = state.apply_fn(
            variables, inputs, train=True, rngs={"latent": latent_rng})
        new_batch_stats = state.batch_stats
      loss, metrics = compute_loss(positions, aux, batch, template, weights, config.loss)
      return loss, (metrics, new_batch_stats)

    (loss, (metrics, new_batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, batch_stats=new_batch_stats)
    metrics = dict(metrics)
    metrics["loss"] = loss
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["param_norm"] = optax.tree.norm(new_state.params)
    metrics["update_norm"] = optax.tree.norm(
        jax.tree.map(jnp.subtract, new_state.params, state.params))
    return new_state, metrics

  return train_step


def make_predict_fn(model) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
  """Build `predict(variables, images, rng, num_samples)`.

  Returns node positions from the latent mean `[B, N, 2]` and, when
  `num_samples > 0`, per-node standard deviations over that many latent
  samples `[B, N]` (Euclidean, normalised units); otherwise zeros.
  """

  @functools.partial(jax.jit, static_argnames=("num_samples",))
  def predict(variables, images, rng, num_samples: int = 0):
    positions, aux = model.apply(variables, images, train=False)
    if num_samples <= 0:
      return positions, {"std": jnp.zeros(positions.shape[:2], positions.dtype), **aux}

    def sample(key):
      sampled, _ = model.apply(
          variables, images, train=False, sample_latent=True, rngs={"latent": key})
      return sampled

    samples = jax.vmap(sample)(jax.random.split(rng, num_samples))  # [K, B, N, 2]
    spread = jnp.sqrt(jnp.sum(jnp.var(samples, axis=0), axis=-1))
    return positions, {"std": spread, **aux}

  return predict


def make_eval_step(model, template: GraphTemplate,
                   input_kind: str = "image") -> Callable[[Any, Batch], Metrics]:
  """Build `eval_step(variables, batch) -> metrics` with sums over valid images.

  `input_kind` selects the encoder input ("image" or "masks", see `model_inputs`).

  Returns `chamfer_sum` (final-level Chamfer in normalised units, summed over
  valid images), `count` and the positions for host-side Dice.
  """

  def eval_step(variables, batch: Batch) -> Metrics:
    positions, _ = model.apply(variables, model_inputs(batch, input_kind), train=False)
    count = jnp.sum(batch["valid"].astype(jnp.float32))
    # chamfer_loss averages over valid images; the caller sums over batches.
    chamfer_mean = chamfer_loss(positions, batch, template, 0)
    return {"chamfer_sum": chamfer_mean * count, "count": count, "positions": positions}

  return eval_step
