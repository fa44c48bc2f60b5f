"""Edge regularisers on the predicted contour rings.

For one organ with nodes x(0..N-1) on a closed ring, edge vectors
e(i) = x(i+1) - x(i) (indices mod N) and edge lengths l(i) = |e(i)|:

- same-length: mean_i ((l(i) - mean l) / mean l)^2, scale-free;
- elasticity: mean_i |e(i)|^2;
- curvature: mean_i |x(i-1) - 2 x(i) + x(i+1)|^2.

Deviation from the reference implementation: its curvature term flips the
edge orientation at the wrap-around edge. Here the true second difference is
used at every node, the wrap-around included.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mask_hybridgnet_jax.losses.chamfer import masked_mean_over_images

Array = jax.Array

# Squared lengths at or below this count as zero-length edges. In normalised
# coordinates an edge is about 1e-3 to 1e-2 long (squared 1e-6 to 1e-4) and in
# pixels about 1 to 10, so 1e-20 only ever catches true duplicates.
_MIN_SQUARED_LENGTH = 1e-20
# Floor for a mean edge length or a perimeter used as a divisor.
_MIN_LENGTH = 1e-10


def safe_norm(vectors: Array) -> Array:
  """Euclidean norm over the last axis, 0 with a zero gradient at the zero vector.

  The gradient of sqrt at 0 is infinite (NaN once multiplied by 0), so the
  argument of sqrt is replaced by 1 where the vector is (near) zero.
  """
  squared = jnp.sum(vectors * vectors, axis=-1)
  nonzero = squared > _MIN_SQUARED_LENGTH
  return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, squared, 1.0)), 0.0)


def ring_terms(nodes: Array) -> dict[str, Array]:
  """Compute the regularisers of closed rings.

  Args:
    nodes: `[..., N, 2]` ring nodes (N >= 3), any length unit.

  Returns:
    dict of `[...]` arrays: `same_length` (unitless), `elasticity` and
    `curvature` (squared units), and `perimeter` (units).
  """
  following = jnp.roll(nodes, -1, axis=-2)
  preceding = jnp.roll(nodes, 1, axis=-2)
  edges = following - nodes
  lengths = safe_norm(edges)
  mean_length = jnp.mean(lengths, axis=-1, keepdims=True)
  # A ring collapsed to one point has mean length 0, so its relative
  # deviations would be 0 / 0. The floor makes them 0 instead of NaN.
  relative = (lengths - mean_length) / jnp.maximum(mean_length, _MIN_LENGTH)
  second_difference = preceding - 2.0 * nodes + following
  return {
      "same_length": jnp.mean(relative * relative, axis=-1),
      "elasticity": jnp.mean(jnp.sum(edges * edges, axis=-1), axis=-1),
      "curvature": jnp.mean(
          jnp.sum(second_difference * second_difference, axis=-1), axis=-1),
      "perimeter": jnp.sum(lengths, axis=-1),
  }


def edge_losses(
    positions: Array,
    template: Any,
    level: int,
    present: Array,
    valid: Array,
) -> dict[str, Array]:
  """Compute perimeter-weighted same-length, elasticity and curvature losses.

  Each organ's terms are weighted by its predicted perimeter over the largest
  predicted perimeter among the organs present in the valid images of the
  batch, summed over the organs present, and averaged over valid images. The
  weights pass through `stop_gradient`, so they only rescale the terms and
  add no gradient of their own that would shrink an organ's perimeter relative
  to the largest one.

  Args:
    positions: `[B, n, 2]` nodes at `level`, organs concatenated in template
      order (any length unit; training uses normalised coordinates).
    template: the `GraphTemplate`; only `organ_indices(level)` is used.
    level: resolution level of `positions`.
    present: bool `[B, O]`, organs with ground truth in each image.
    valid: bool `[B]`, False for padding images.

  Returns:
    dict with scalar `same_length`, `elasticity` and `curvature`.
  """
  present = jnp.asarray(present, bool)
  valid = jnp.asarray(valid, bool)
  slices = template.organ_indices(level)
  if present.shape[1] != len(slices):
    raise ValueError(
        f"present has {present.shape[1]} organs but the graph template has "
        f"{len(slices)} ({', '.join(template.organ_names)}).")

  per_organ = [ring_terms(positions[:, organ_index]) for organ_index in slices]
  stacked = {
      name: jnp.stack([terms[name] for terms in per_organ], axis=1)  # [B, O]
      for name in per_organ[0]
  }

  counted = present & valid[:, None]
  perimeter = jax.lax.stop_gradient(stacked["perimeter"])
  perimeter = jnp.where(counted, perimeter, 0.0)
  largest = jnp.maximum(jnp.max(perimeter), _MIN_LENGTH)
  organ_weights = perimeter / largest  # 0 for organs not counted

  losses = {}
  for name in ("same_length", "elasticity", "curvature"):
    weighted = jnp.where(counted, organ_weights * stacked[name], 0.0)
    losses[name] = masked_mean_over_images(jnp.sum(weighted, axis=1), valid)
  return losses
