"""Arc-length resampling of contours and the mean contour of a training split.

The mean contour initialises the model's shape prior. Every organ starts as an
ordered ring in its average place, so the graph decoder only learns
displacements, and node i starts near the same part of the boundary in every
image. Contours are resampled from their topmost point (smallest y, then
smallest x) in their stored orientation, which the dataset builders make
positive (`contours.orient_positive`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mask_hybridgnet_jax.contours import signed_area


class MeanShapeError(ValueError):
  """The training split cannot give a mean contour for some organ."""


def topmost_index(points: np.ndarray) -> int:
  """Index of the point with the smallest y, ties broken by the smallest x."""
  points = np.asarray(points)
  return int(np.lexsort((points[:, 0], points[:, 1]))[0])


def resample_closed(points: np.ndarray, num_points: int) -> np.ndarray:
  """Resample a closed polygon at `num_points` equal arc-length steps.

  The first sample is the topmost vertex and samples follow the vertex order.

  Args:
    points: `[P, 2]` vertices (x, y), P >= 1, the closing edge implied.
    num_points: number of samples M >= 1.

  Returns:
    `[M, 2]` float64. A polygon of zero length gives M copies of its point.
  """
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
    raise ValueError(f"expected a non-empty [P, 2] polygon, got shape {points.shape}.")
  if num_points < 1:
    raise ValueError(f"num_points must be >= 1, got {num_points}.")
  start = topmost_index(points)
  ring = np.roll(points, -start, axis=0)
  closed = np.concatenate([ring, ring[:1]], axis=0)
  steps = np.sqrt(np.sum(np.diff(closed, axis=0) ** 2, axis=1))
  cumulative = np.concatenate([[0.0], np.cumsum(steps)])
  total = cumulative[-1]
  if total == 0.0:
    return np.repeat(ring[:1], num_points, axis=0)
  targets = np.arange(num_points) * (total / num_points)
  x = np.interp(targets, cumulative, closed[:, 0])
  y = np.interp(targets, cumulative, closed[:, 1])
  return np.stack([x, y], axis=1)


def mean_contour_shape(
    examples: Iterable[Mapping[str, Any]],
    organ_names: Sequence[str],
    node_counts: Sequence[int],
) -> np.ndarray:
  """Mean arc-length-resampled contour of every organ, organs concatenated.

  Args:
    examples: stored examples with "points" `[T, 2]` (normalised, organs
      concatenated), "lengths" `[O]` and "present" `[O]`.
    organ_names: the O organ names, in the order of the examples' organs.
    node_counts: nodes per organ at full resolution (the template's).

  Returns:
    `[sum(node_counts), 2]` float32, normalised (x, y).

  Raises:
    MeanShapeError: an organ is absent from every example.
  """
  if len(organ_names) != len(node_counts):
    raise ValueError(f"{len(organ_names)} organ names but {len(node_counts)} node counts.")
  sums = [np.zeros((n, 2)) for n in node_counts]
  counts = [0] * len(node_counts)
  for example in examples:
    points = np.asarray(example["points"], np.float64)
    lengths = np.asarray(example["lengths"])
    present = np.asarray(example["present"])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for o, num_nodes in enumerate(node_counts):
      if present[o] and lengths[o] > 0:
        sums[o] += resample_closed(points[offsets[o]:offsets[o + 1]], num_nodes)
        counts[o] += 1
  missing = [name for name, count in zip(organ_names, counts) if count == 0]
  if missing:
    raise MeanShapeError(
        f"organ(s) {missing} are absent from every training example, so they have no mean "
        "contour; remove them from the dataset metadata or set model.shape_prior=False.")
  return np.concatenate([s / c for s, c in zip(sums, counts)], axis=0).astype(np.float32)


def unified_mean_shape(
    rings: Sequence[Sequence[int]],
    positions: np.ndarray,
    organ_means: np.ndarray,
) -> np.ndarray:
  """Place every organ's mean contour on the nodes of a unified graph.

  A unified graph's rings run in the order of its template mask's contours,
  which need not start at the topmost node nor turn the way stored contours
  do. Each ring is therefore turned to positive orientation and rolled to
  start at its topmost node. Both are read from `positions`, in any frame
  that only scales and shifts the image. Node k of the ring then gets point
  k of the organ's mean contour. A node shared by several organs gets the
  average of their points.

  Args:
    rings: per organ, its level-0 node indices in circular order.
    positions: `[n0, 2]` (x, y) of the nodes in the template mask.
    organ_means: `[sum(len(ring)), 2]` mean contours, organs concatenated
      (`mean_contour_shape` with one node count per ring).

  Returns:
    `[n0, 2]` float32 in the frame of `organ_means`.
  """
  positions = np.asarray(positions, np.float64)
  organ_means = np.asarray(organ_means, np.float64)
  expected = sum(len(ring) for ring in rings)
  if organ_means.shape != (expected, 2):
    raise ValueError(f"expected mean contours of shape ({expected}, 2) for rings of "
                     f"{[len(r) for r in rings]} nodes, got {organ_means.shape}.")
  sums = np.zeros((len(positions), 2))
  counts = np.zeros((len(positions),))
  offset = 0
  for ring in rings:
    ring = np.asarray(ring)
    if signed_area(positions[ring]) < 0:
      ring = ring[::-1]
    ring = np.roll(ring, -topmost_index(positions[ring]))
    sums[ring] += organ_means[offset:offset + len(ring)]
    counts[ring] += 1
    offset += len(ring)
  if np.any(counts == 0):
    missing = np.flatnonzero(counts == 0)[:5].tolist()
    raise ValueError(f"nodes {missing} belong to no ring; the rings do not cover the graph.")
  return (sums / counts[:, None]).astype(np.float32)
