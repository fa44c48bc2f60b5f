"""Loss-weight and learning-rate schedules.

Schedules are functions of t, the number of training examples seen, and T,
the total for the run, so they do not change with the batch size.

Loss config fields (`config.loss`, reference values in `default_loss_config`):

  chamfer_start, chamfer_end          Chamfer weight, linear over [0, T]: 10 -> 100.
  same_length_start, same_length_end  same-length weight, log-linear over the
                                      first same_length_ramp_fraction * T, then
                                      constant: 0.01 -> 1.
  same_length_ramp_fraction           0.2.
  elasticity_start, elasticity_end    log-linear over [0, T]: 250 -> 2.5.
  curvature_start, curvature_end      log-linear over [0, T]: 300 -> 3.
  kl_start, kl_end                    log-linear over [0, T]: 1e-6 -> 1e-3.
  raster_enabled                      False switches the rasterisation loss off
                                      for the whole run (it is then never traced).
  raster_start_fraction               the raster weight is raster_weight from
                                      t >= raster_start_fraction * T, 0 before: 0.2.
  raster_weight                       1.
  tau                                 rasteriser temperature, px^2 of the network
                                      input: 0.1, valid range [1e-3, 10].
  dice_weight, bce_weight             weights of Dice and BCE inside the raster
                                      term: 1 and 1.
  chamfer_chunk_size                  ground-truth points per Chamfer chunk;
                                      0 computes all pairs at once.
  raster_chunk_size                   segments per step of the rasteriser's
                                      nearest-segment pass: 16.
  pixel_weight                        dual model only: constant weight, from
                                      the first step, of Dice + BCE on the pixel
                                      decoder's masks: 1.

Optimiser config fields read by `learning_rate_schedule` (`config.optim`):
learning_rate (1e-4), decay_fraction (0.5) and decay_factor (0.1): the
learning rate is multiplied by decay_factor from step
int(decay_fraction * T) // batch_size on.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

Array = jax.Array

WEIGHT_NAMES = ("chamfer", "same_length", "elasticity", "curvature", "kl", "raster")


def default_loss_config() -> ml_collections.ConfigDict:
  """Return the loss settings of the reference implementation."""
  config = ml_collections.ConfigDict()
  config.chamfer_start = 10.0
  config.chamfer_end = 100.0
  config.same_length_start = 0.01
  config.same_length_end = 1.0
  config.same_length_ramp_fraction = 0.2
  config.elasticity_start = 250.0
  config.elasticity_end = 2.5
  config.curvature_start = 300.0
  config.curvature_end = 3.0
  config.kl_start = 1e-6
  config.kl_end = 1e-3
  config.raster_enabled = True
  config.raster_start_fraction = 0.2
  config.raster_weight = 1.0
  config.tau = 0.1
  config.dice_weight = 1.0
  config.bce_weight = 1.0
  config.chamfer_chunk_size = 0
  config.raster_chunk_size = 16
  config.pixel_weight = 1.0
  return config


def _check_positive(loss_config: Any, *names: str) -> None:
  for name in names:
    value = getattr(loss_config, name)
    if not value > 0:
      raise ValueError(
          f"loss config: {name} = {value!r}, but a log-linear schedule needs a "
          "positive value.")


def _check_fraction(loss_config: Any, name: str) -> None:
  value = getattr(loss_config, name)
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"loss config: {name} = {value!r}, expected a fraction in [0, 1].")


def _linear(start: float, end: float, progress: Array) -> Array:
  return start + (end - start) * progress


def _log_linear(start: float, end: float, progress: Array) -> Array:
  """Interpolate linearly in log space: start at progress 0, end at 1."""
  log_start = jnp.log(jnp.float32(start))
  log_end = jnp.log(jnp.float32(end))
  return jnp.exp(log_start + (log_end - log_start) * progress)


def loss_weights(
    examples_seen: Array | int,
    total_examples: Array | int,
    loss_config: Any,
) -> dict[str, Array]:
  """Compute the loss weights after `examples_seen` of `total_examples` examples.

  Jittable in both counts; the config is read on the host.

  Args:
    examples_seen: t, scalar int or float.
    total_examples: T > 0.
    loss_config: the loss config (fields listed in the module docstring).

  Returns:
    dict of float32 scalars keyed by WEIGHT_NAMES.
  """
  _check_positive(
      loss_config, "same_length_start", "same_length_end", "elasticity_start",
      "elasticity_end", "curvature_start", "curvature_end", "kl_start", "kl_end")
  _check_fraction(loss_config, "same_length_ramp_fraction")
  _check_fraction(loss_config, "raster_start_fraction")
  if isinstance(total_examples, (int, float)) and total_examples <= 0:
    raise ValueError(f"total_examples = {total_examples!r}, expected a positive count.")

  t = jnp.asarray(examples_seen, jnp.float32)
  total = jnp.asarray(total_examples, jnp.float32)
  progress = jnp.clip(t / total, 0.0, 1.0)
  # The floor of one example keeps a ramp fraction of 0 from dividing by 0:
  # the end value then applies from the first example on.
  ramp = jnp.maximum(total * loss_config.same_length_ramp_fraction, 1.0)
  same_length_progress = jnp.clip(t / ramp, 0.0, 1.0)

  if loss_config.raster_enabled:
    started = t >= total * loss_config.raster_start_fraction
    raster = jnp.where(started, jnp.float32(loss_config.raster_weight), jnp.float32(0.0))
  else:
    raster = jnp.float32(0.0)

  return {
      "chamfer": _linear(loss_config.chamfer_start, loss_config.chamfer_end, progress),
      "same_length": _log_linear(
          loss_config.same_length_start, loss_config.same_length_end,
          same_length_progress),
      "elasticity": _log_linear(
          loss_config.elasticity_start, loss_config.elasticity_end, progress),
      "curvature": _log_linear(
          loss_config.curvature_start, loss_config.curvature_end, progress),
      "kl": _log_linear(loss_config.kl_start, loss_config.kl_end, progress),
      "raster": raster,
  }


def learning_rate_schedule(
    optim_config: Any, batch_size: int, total_examples: int
) -> optax.Schedule:
  """Return a step-indexed learning rate that drops once, part way through the run.

  The rate is `learning_rate` until step `int(decay_fraction * T) // batch_size`
  and `learning_rate * decay_factor` from that step on (reference: 1e-4, x0.1
  at T / 2).

  Args:
    optim_config: needs `learning_rate`, `decay_fraction` and `decay_factor`.
    batch_size: examples per optimiser step.
    total_examples: T.
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size = {batch_size!r}, expected a positive integer.")
  if not 0.0 <= optim_config.decay_fraction <= 1.0:
    raise ValueError(
        f"optim config: decay_fraction = {optim_config.decay_fraction!r}, expected a "
        "fraction in [0, 1].")
  if optim_config.decay_factor < 0:
    raise ValueError(
        f"optim config: decay_factor = {optim_config.decay_factor!r}, expected a "
        "non-negative factor.")
  decay_step = int(optim_config.decay_fraction * total_examples) // batch_size
  return optax.piecewise_constant_schedule(
      init_value=optim_config.learning_rate,
      boundaries_and_scales={decay_step: optim_config.decay_factor})
