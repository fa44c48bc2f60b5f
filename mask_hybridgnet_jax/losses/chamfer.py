"""Chamfer loss between predicted contour nodes and padded boundary points.

For one organ with predicted nodes P and ground-truth boundary points G,

  chamfer(P, G) = mean_p min_g |p - g|^2 + mean_g min_p |p - g|^2,

in squared coordinate units (normalised coordinates in training). Ground-truth
sets have different lengths, so they are padded to one budget and carry a
length: rows at or past the length are padding and never reach the value or
the gradient, whatever they contain (zeros, 1e6, NaN).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _squared_distances(pred: Array, gt: Array) -> Array:
  """Return `[N, P]` squared distances, formed from coordinate differences.

  The expansion |x|^2 + |y|^2 - 2 x.y cancels catastrophically in float32 and
  can go negative, so the differences are taken explicitly.
  """
  diff = pred[:, None, :] - gt[None, :, :]
  return jnp.sum(diff * diff, axis=-1)


def chamfer_distance(
    pred: Array,
    gt: Array,
    length: Array | int,
    *,
    chunk_size: int | None = None,
) -> Array:
  """Compute the symmetric Chamfer distance to a padded point set.

  Args:
    pred: `[N, 2]` predicted nodes, N >= 1.
    gt: `[P, 2]` ground-truth points; rows `length..P-1` are padding.
    length: scalar int, the number of real rows of `gt`. A length of 0 (absent
      organ) gives exactly 0 with a zero gradient.
    chunk_size: when given, the nearest pairs are found walking `gt` in chunks
      of this many rows without gradient, and only the distances of those
      pairs are differentiated. The largest intermediate of the value and the
      gradient is then `[N, chunk_size]` instead of `[N, P]`. The result equals
      the unchunked one up to float summation order.

  Returns:
    Scalar, in squared units of the input coordinates.
  """
  if chunk_size is not None and chunk_size < 1:
    raise ValueError(f"chunk_size = {chunk_size!r}, expected a positive integer or None.")
  num_points = gt.shape[0]
  length = jnp.asarray(length, jnp.int32)
  has_points = length > 0
  valid = jnp.arange(num_points) < length
  # Padding is replaced before any arithmetic: a NaN row that only got masked
  # after the subtraction would still poison the gradient (0 * NaN = NaN).
  gt = jnp.where(valid[:, None], gt, jnp.zeros_like(gt))
  # Excluded pairs get the largest finite float. It only enters minima, and
  # every minimum that could equal it is zeroed below.
  excluded = jnp.asarray(jnp.finfo(pred.dtype).max, pred.dtype)

  if chunk_size is None or chunk_size >= num_points:
    d2 = _squared_distances(pred, gt)
    d2 = jnp.where(valid[None, :], d2, excluded)
    pred_to_gt_min = jnp.min(d2, axis=1)  # [N]
    gt_to_pred_min = jnp.min(d2, axis=0)  # [P]
    gt_to_pred_sum = jnp.sum(jnp.where(valid, gt_to_pred_min, 0.0))
  else:
    pred_to_gt_min, gt_to_pred_sum = _chunked_minima(
        pred, gt, valid, chunk_size, excluded)

  pred_to_gt_min = jnp.where(has_points, pred_to_gt_min, 0.0)
  pred_term = jnp.mean(pred_to_gt_min)
  gt_term = gt_to_pred_sum / jnp.maximum(length, 1).astype(pred.dtype)
  return jnp.where(has_points, pred_term + gt_term, 0.0)


def _chunked_nearest(
    pred: Array, gt: Array, valid: Array, chunk_size: int, excluded: Array
) -> tuple[Array, Array]:
  """Return the nearest valid gt row of each node `[N]` and nearest node of each gt row `[P]`.

  Walks `gt` in chunks with `lax.scan`, carrying each node's best squared
  distance and its row. No gradient flows through this pass, so the scan
  stores nothing for a backward pass and the largest intermediate is
  `[N, chunk_size]`. Ties go to the lowest index. `gt` must already have its
  padding replaced. A node with no valid row gets row 0, which the caller
  masks.
  """
  pred = jax.lax.stop_gradient(pred)
  gt = jax.lax.stop_gradient(gt)
  num_points = gt.shape[0]
  num_chunks = -(-num_points // chunk_size)
  extra = num_chunks * chunk_size - num_points
  # The rows added to fill the last chunk are masked like any other padding.
  gt = jnp.pad(gt, ((0, extra), (0, 0)))
  valid = jnp.pad(valid, (0, extra))
  gt_chunks = gt.reshape(num_chunks, chunk_size, 2)
  valid_chunks = valid.reshape(num_chunks, chunk_size)
  offsets = jnp.arange(num_chunks, dtype=jnp.int32) * chunk_size

  def step(carry, chunk):
    best_d2, best_row = carry
    gt_chunk, valid_chunk, offset = chunk
    d2 = _squared_distances(pred, gt_chunk)
    d2 = jnp.where(valid_chunk[None, :], d2, excluded)  # [N, chunk_size]
    chunk_row = jnp.argmin(d2, axis=1)
    chunk_d2 = jnp.take_along_axis(d2, chunk_row[:, None], axis=1)[:, 0]
    # Strictly smaller, so an earlier chunk keeps a tie.
    better = chunk_d2 < best_d2
    best_d2 = jnp.where(better, chunk_d2, best_d2)
    best_row = jnp.where(better, offset + chunk_row.astype(jnp.int32), best_row)
    return (best_d2, best_row), jnp.argmin(d2, axis=0).astype(jnp.int32)

  init = (jnp.full(pred.shape[:1], excluded, pred.dtype),
          jnp.zeros(pred.shape[:1], jnp.int32))
  (_, nearest_row), nearest_node = jax.lax.scan(
      step, init, (gt_chunks, valid_chunks, offsets))
  return nearest_row, nearest_node.reshape(-1)[:num_points]


def _chunked_minima(
    pred: Array, gt: Array, valid: Array, chunk_size: int, excluded: Array
) -> tuple[Array, Array]:
  """Return (`[N]` min over valid gt rows, sum over valid gt rows of min over pred).

  The nearest pairs are found without gradient (`_chunked_nearest`), then
  only their `N + P` distances are differentiated. The gradient of a minimum
  flows to the minimising pair alone, so this equals differentiating the
  full `[N, P]` matrix, in `O(N + P)` memory instead of `O(N P)`.
  """
  nearest_row, nearest_node = _chunked_nearest(pred, gt, valid, chunk_size, excluded)
  pred_diff = pred - gt[nearest_row]
  pred_to_gt_min = jnp.sum(pred_diff * pred_diff, axis=-1)
  gt_diff = gt - pred[nearest_node]
  gt_to_pred_min = jnp.sum(gt_diff * gt_diff, axis=-1)
  gt_to_pred_sum = jnp.sum(jnp.where(valid, gt_to_pred_min, 0.0))
  return pred_to_gt_min, gt_to_pred_sum


def masked_mean_over_images(per_image: Array, valid: Array) -> Array:
  """Average `[B]` values over the images marked valid; 0 when none is.

  Values of invalid images are replaced (not multiplied by 0), so a NaN
  there cannot reach the mean.
  """
  valid = jnp.asarray(valid, bool)
  per_image = jnp.where(valid, per_image, 0.0)
  count = jnp.sum(valid).astype(per_image.dtype)
  return jnp.sum(per_image) / jnp.maximum(count, 1.0)


def chamfer_loss(
    positions: Array,
    batch: Mapping[str, Any],
    template: Any,
    level: int,
    *,
    chunk_size: int | None = None,
) -> Array:
  """Sum the Chamfer distance over organs present, then average over valid images.

  Args:
    positions: `[B, n, 2]` predicted nodes at `level`, normalised coordinates,
      organs concatenated in `template` order.
    batch: needs `points` `[B, O, P, 2]` (normalised), `lengths` int `[B, O]`,
      `present` bool `[B, O]` and `valid` bool `[B]`.
    template: the `GraphTemplate`; only `organ_indices(level)` is used.
    level: resolution level of `positions` (0 is the full graph).
    chunk_size: see `chamfer_distance`.

  Returns:
    Scalar loss in squared normalised units.
  """
  points = jnp.asarray(batch["points"])
  lengths = jnp.asarray(batch["lengths"], jnp.int32)
  present = jnp.asarray(batch["present"], bool)
  slices = template.organ_indices(level)
  if points.shape[1] != len(slices):
    raise ValueError(
        f"batch['points'] has {points.shape[1]} organs but the graph template has "
        f"{len(slices)} ({', '.join(template.organ_names)}); build the batch and "
        "the template from the same dataset metadata.")

  # An organ flagged absent counts as having no points, whatever its length.
  lengths = jnp.where(present, lengths, 0)
  distance = jax.vmap(lambda p, g, n: chamfer_distance(p, g, n, chunk_size=chunk_size))
  per_image = jnp.zeros(positions.shape[:1], positions.dtype)
  for organ, organ_index in enumerate(slices):
    per_image = per_image + distance(
        positions[:, organ_index], points[:, organ], lengths[:, organ])
  return masked_mean_over_images(per_image, batch["valid"])


def check_lengths(
    lengths: Any,
    padded_size: int,
    ids: Sequence[Any],
    organ_names: Sequence[str],
) -> None:
  """Raise ValueError naming the example and organ of any invalid length.

  Runs on the host before jit: inside jit an out-of-range length would not
  fail, it would silently drop or misread points.

  Args:
    lengths: int `[B, O]` point counts.
    padded_size: P, the number of rows each organ's point array has.
    ids: B example ids (str or bytes).
    organ_names: O organ names, in channel order.
  """
  lengths = np.asarray(lengths)
  if lengths.ndim != 2 or lengths.shape != (len(ids), len(organ_names)):
    raise ValueError(
        f"lengths has shape {lengths.shape}, expected ({len(ids)}, {len(organ_names)}) "
        "= (number of ids, number of organs).")
  for b, o in zip(*np.nonzero((lengths < 0) | (lengths > padded_size))):
    example = ids[b].decode() if isinstance(ids[b], bytes) else str(ids[b])
    raise ValueError(
        f"example {example!r}: organ {organ_names[o]!r} has {int(lengths[b, o])} "
        f"boundary points, outside the valid range 0..{padded_size} (the padded "
        "size). Rebuild the dataset so that its points budget covers the longest "
        "contour, or pad the batch to a larger size.")
