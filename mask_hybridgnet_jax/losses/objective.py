"""The weighted training objective and its metrics.

  total = w_chamfer * (Chamfer of the final nodes + Chamfer of every skip's nodes)
        + w_same_length * same_length + w_elasticity * elasticity
        + w_curvature * curvature + w_kl * KL
        + w_raster * (dice_weight * Dice + bce_weight * BCE)
        + pixel_weight * (pixel Dice + pixel BCE)        (dual model only)

The Chamfer terms apply at every supervised level: the final nodes at level
0 and each image-to-graph skip at its own level. The edge and raster terms
use the final nodes only. Chamfer and edge terms are in normalised coordinates,
the rasteriser works in pixels of the network input. The pixel term applies
from the first step whenever the model returns "mask_logits".
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from mask_hybridgnet_jax.losses.chamfer import chamfer_loss
from mask_hybridgnet_jax.losses.edges import edge_losses
from mask_hybridgnet_jax.losses.kl import kl_divergence
from mask_hybridgnet_jax.losses.pixel import pixel_mask_losses
from mask_hybridgnet_jax.losses.raster import raster_losses, validate_tau
from mask_hybridgnet_jax.losses.schedules import WEIGHT_NAMES

Array = jax.Array


def _chamfer_terms(
    positions: Array,
    aux: Mapping[str, Any],
    batch: Mapping[str, Any],
    template: Any,
    chunk_size: int | None,
) -> dict[str, Array]:
  """Return the unweighted Chamfer loss of the final nodes and of each skip."""
  level_positions = tuple(aux.get("level_positions", ()))
  levels = tuple(aux.get("levels", ()))
  if len(level_positions) != len(levels):
    raise ValueError(
        f"aux has {len(level_positions)} level_positions but {len(levels)} levels; "
        "the model must return one level per skip output.")

  terms = {"chamfer_final": chamfer_loss(positions, batch, template, 0, chunk_size=chunk_size)}
  for skip_positions, level in zip(level_positions, levels):
    name = f"chamfer_skip_level{int(level)}"
    if name in terms:
      raise ValueError(f"aux lists level {level} twice; each skip needs its own level.")
    terms[name] = chamfer_loss(
        skip_positions, batch, template, int(level), chunk_size=chunk_size)
  return terms


def compute_loss(
    positions: Array,
    aux: Mapping[str, Any],
    batch: Mapping[str, Any],
    template: Any,
    weights: Mapping[str, Array],
    loss_config: Any,
) -> tuple[Array, dict[str, Array]]:
  """Compute the weighted loss of one batch and its unweighted parts.

  The raster term is evaluated inside `jax.lax.cond(weights["raster"] > 0)`,
  so the program compiles once for the whole run and skips the rasteriser
  during the warm-up. With `loss_config.raster_enabled` False it is not traced
  at all.

  Args:
    positions: `[B, n0, 2]` final nodes, normalised coordinates.
    aux: model intermediates: `level_positions` (tuple of `[B, n_level, 2]`),
      `levels` (tuple of ints, same order), `mu` and `log_var` (`[B, Z]`).
    batch: `masks` `[B, O, S, S]`, `points` `[B, O, P, 2]`, `lengths` `[B, O]`,
      `present` `[B, O]`, `valid` `[B]` (see `chamfer_loss`, `raster_losses`).
    template: the `GraphTemplate` the model was built with.
    weights: scalars keyed by `schedules.WEIGHT_NAMES`, from `loss_weights`.
    loss_config: the loss config (fields listed in `losses/schedules.py`).

  Returns:
    (total loss, metrics). The metrics are unweighted scalars, except
    `total`: `chamfer` is the sum of the listed `chamfer_final` and
    `chamfer_skip_level<l>` terms. Then come `same_length`, `elasticity`,
    `curvature`, `kl`, `raster_dice` and `raster_bce` (both 0 while the raster
    weight is 0), `pixel_dice` and `pixel_bce` (dual model only), and
    `weight_<name>` for every weight.
  """
  missing = [name for name in WEIGHT_NAMES if name not in weights]
  if missing:
    raise ValueError(
        f"weights lacks {missing}; build it with schedules.loss_weights.")
  tau = validate_tau(loss_config.tau)
  chamfer_chunk_size = loss_config.chamfer_chunk_size or None

  chamfer_terms = _chamfer_terms(positions, aux, batch, template, chamfer_chunk_size)
  chamfer = sum(chamfer_terms.values())
  edges = edge_losses(positions, template, 0, batch["present"], batch["valid"])
  kl = kl_divergence(aux["mu"], aux["log_var"], batch["valid"])

  zero = jnp.zeros((), positions.dtype)
  if loss_config.raster_enabled:
    raster = jax.lax.cond(
        weights["raster"] > 0,
        lambda p: raster_losses(
            p, batch, template, tau, chunk_size=loss_config.raster_chunk_size),
        lambda p: {"dice": zero, "bce": zero},
        positions)
  else:
    raster = {"dice": zero, "bce": zero}
  raster_term = (loss_config.dice_weight * raster["dice"]
                 + loss_config.bce_weight * raster["bce"])

  total = (weights["chamfer"] * chamfer
           + weights["same_length"] * edges["same_length"]
           + weights["elasticity"] * edges["elasticity"]
           + weights["curvature"] * edges["curvature"]
           + weights["kl"] * kl
           + weights["raster"] * raster_term)
  pixel_metrics = {}
  if "mask_logits" in aux:
    pixel = pixel_mask_losses(aux["mask_logits"], batch)
    total = total + loss_config.get("pixel_weight", 1.0) * (pixel["dice"] + pixel["bce"])
    pixel_metrics = {"pixel_dice": pixel["dice"], "pixel_bce": pixel["bce"]}

  metrics = {"total": total, "chamfer": chamfer, **chamfer_terms, **edges, "kl": kl,
             "raster_dice": raster["dice"], "raster_bce": raster["bce"], **pixel_metrics}
  for name in WEIGHT_NAMES:
    metrics[f"weight_{name}"] = jnp.asarray(weights[name], positions.dtype)
  return total, metrics
