"""Unified graph templates: adjacent organs share their boundary nodes.

The graph is built once from a template mask (a label map of the dataset):

1. Each organ's outer boundary is traced, oriented like the ground truth and
   resampled by arc length to the organ's node count, starting at its first
   boundary pixel.
2. Nodes of different organs closer than `merge_distance_px` merge into one
   node, closest pairs first. A merged node contains at most one node per
   organ, so no ring visits a node twice.
3. Coarsening to the next level pairs two consecutive ring nodes only when
   both have degree 2 (exactly two neighbours in the union of all rings).
   Such a pair follows each other in every ring that contains either node, so
   every ring stays a simple ring after pooling. Junctions (degree 3 or more)
   are never paired and survive every level.

Unpooling copies: every fine node takes the value of the coarse node that
pooled it (`GraphTemplate.upsample`).

Worked example, two 8 x 8 squares side by side at 28 nodes each (one node per
boundary pixel): the 8 node pairs across their common side are 1 px apart and
merge, giving 28 + 28 - 8 = 48 nodes. The two merged nodes at the ends of the
common side have three neighbours (junctions); the other 6 have two.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from mask_hybridgnet_jax.contours import extract_contour
from mask_hybridgnet_jax.organs import Organ
from mask_hybridgnet_jax.topology import GraphTemplate, TopologyError, pool_ring

logger = logging.getLogger(__name__)

# Boundary points of different organs closer than this merge, in pixels of
# the template mask. Diagonal pixel neighbours are 1.41 px apart.
DEFAULT_MERGE_DISTANCE_PX = 1.8


def resample_ring(points: np.ndarray, count: int) -> np.ndarray:
  """Resample a closed polygon to `count` points equally spaced by arc length.

  Args:
    points: `[P, 2]` vertices, first point not repeated, P >= 2.
    count: number of output points (>= 1); the first equals `points[0]`.

  Returns:
    float64 `[count, 2]`.
  """
  points = np.asarray(points, np.float64)
  closed = np.concatenate([points, points[:1]])
  segment_lengths = np.sqrt(np.sum(np.diff(closed, axis=0) ** 2, axis=1))
  cumulative = np.concatenate([[0.0], np.cumsum(segment_lengths)])
  perimeter = cumulative[-1]
  if perimeter <= 0:
    raise TopologyError("cannot resample a contour of zero length.")
  targets = np.arange(count) * perimeter / count
  x = np.interp(targets, cumulative, closed[:, 0])
  y = np.interp(targets, cumulative, closed[:, 1])
  return np.stack([x, y], axis=1)


def merge_nodes(
    organ_points: Sequence[np.ndarray], merge_distance_px: float
) -> tuple[list[tuple[int, ...]], np.ndarray]:
  """Merge nodes of different organs that are closer than `merge_distance_px`.

  Pairs are merged closest first (ties by organ and node order). A pair is
  skipped when the merged node would contain two nodes of one organ.

  Args:
    organ_points: per organ, its ring nodes `[n_o, 2]` in circular order.
    merge_distance_px: merge threshold, exclusive, in the points' units.

  Returns:
    `(rings, positions)`: each organ's ring as merged node indices, and the
    merged nodes' positions `[n, 2]` (the mean of the merged points). Nodes are
    numbered by first appearance, organ by organ along each ring.
  """
  offsets = np.cumsum([0] + [len(p) for p in organ_points])
  all_points = np.concatenate([np.asarray(p, np.float64) for p in organ_points])
  organ_of = np.repeat(np.arange(len(organ_points)), [len(p) for p in organ_points])

  candidates = []
  for a in range(len(organ_points)):
    for b in range(a + 1, len(organ_points)):
      diff = organ_points[a][:, None, :] - organ_points[b][None, :, :]
      distances = np.sqrt(np.sum(diff * diff, axis=-1))
      for i, j in zip(*np.nonzero(distances < merge_distance_px)):
        candidates.append((float(distances[i, j]), offsets[a] + i, offsets[b] + j))
  candidates.sort()

  parent = list(range(len(all_points)))
  organs_in = [{int(o)} for o in organ_of]

  def find(i: int) -> int:
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  for _, i, j in candidates:
    root_i, root_j = find(int(i)), find(int(j))
    if root_i == root_j or organs_in[root_i] & organs_in[root_j]:
      continue
    parent[root_j] = root_i
    organs_in[root_i] |= organs_in[root_j]

  index_of_root: dict[int, int] = {}
  members: list[list[int]] = []
  rings = []
  for o in range(len(organ_points)):
    ring = []
    for k in range(offsets[o], offsets[o + 1]):
      root = find(k)
      if root not in index_of_root:
        index_of_root[root] = len(members)
        members.append([])
      members[index_of_root[root]].append(k)
      ring.append(index_of_root[root])
    rings.append(tuple(ring))
  positions = np.stack([all_points[m].mean(axis=0) for m in members])
  return rings, positions


def node_degrees(rings: Sequence[Sequence[int]], num_nodes: int) -> np.ndarray:
  """Return each node's number of distinct neighbours over all rings, int `[n]`."""
  neighbours: list[set[int]] = [set() for _ in range(num_nodes)]
  for ring in rings:
    for k, node in enumerate(ring):
      following = ring[(k + 1) % len(ring)]
      neighbours[node].add(following)
      neighbours[following].add(node)
  return np.array([len(n) for n in neighbours], np.int64)


def coarsen_rings(
    rings: Sequence[Sequence[int]], num_nodes: int
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
  """Pool one level: pair consecutive ring nodes of degree 2, keep the others.

  Rings are walked organ by organ from their first node. Node `ring[k]` pairs
  with `ring[k + 1]` (never across the wrap) when both have degree 2 and
  neither is paired yet. Every other node becomes a coarse node of its own.

  Returns:
    `(coarse_rings, pooling)`: the pooled rings and, per coarse node, the fine
    nodes it averages. Coarse nodes are numbered by first appearance.
  """
  degree = node_degrees(rings, num_nodes)
  partner: dict[int, int] = {}
  for ring in rings:
    for k in range(len(ring) - 1):
      u, v = ring[k], ring[k + 1]
      if degree[u] == 2 and degree[v] == 2 and u not in partner and v not in partner:
        partner[u], partner[v] = v, u

  coarse_of: dict[int, int] = {}
  pooling: list[tuple[int, ...]] = []
  for ring in rings:
    for node in ring:
      if node in coarse_of:
        continue
      group = (node, partner[node]) if node in partner else (node,)
      for member in group:
        coarse_of[member] = len(pooling)
      pooling.append(group)
  return [pool_ring(ring, coarse_of) for ring in rings], pooling


def build_unified_template(
    label_map: np.ndarray,
    organs: Sequence[Organ],
    node_counts: Sequence[int],
    num_levels: int,
    *,
    merge_distance_px: float = DEFAULT_MERGE_DISTANCE_PX,
    source: str = "template mask",
) -> tuple[GraphTemplate, np.ndarray]:
  """Build a unified graph template from a template label map.

  Args:
    label_map: int `[H, W]` label map that contains every organ.
    organs: organs in metadata order.
    node_counts: full-resolution ring nodes per organ, before merging.
    num_levels: resolution levels R.
    merge_distance_px: nodes of different organs closer than this merge, in
      pixels of `label_map`.
    source: name of the label map in messages.

  Returns:
    `(template, positions)`: the template and its level-0 node positions
    `[n0, 2]` in (x, y) pixels of `label_map`.

  Raises:
    TopologyError: an organ is missing from the label map, or a ring gets
      fewer than 4 nodes at some level.
  """
  label_map = np.asarray(label_map)
  if label_map.ndim != 2:
    raise TopologyError(f"{source}: expected a 2-D label map, got shape {label_map.shape}.")
  if len(node_counts) != len(organs):
    raise TopologyError(
        f"{len(node_counts)} node counts for {len(organs)} organs; give one per organ.")
  if not merge_distance_px > 0:
    raise TopologyError(f"merge distance {merge_distance_px!r} px must be positive.")

  organ_points = []
  for organ, count in zip(organs, node_counts):
    contour, _ = extract_contour(label_map == organ.label, source=source, organ=organ.name)
    if contour is None:
      raise TopologyError(
          f"{source}: organ {organ.name!r} (label {organ.label}) is absent; the template "
          "mask for a unified graph must contain every organ.")
    organ_points.append(resample_ring(contour, int(count)))

  rings, positions = merge_nodes(organ_points, merge_distance_px)
  shared = sum(len(r) for r in rings) - len(positions)
  logger.info("%s: unified graph with %d nodes, %d of them merged across organs.",
              source, len(positions), shared)
  if shared == 0:
    logger.warning(
        "%s: no nodes of different organs are closer than %.2f px, so the unified graph "
        "has no shared nodes and equals the independent one except for unpooling.",
        source, merge_distance_px)

  all_rings = [tuple(rings)]
  all_pooling = []
  for _ in range(num_levels - 1):
    num_nodes = 1 + max(max(r) for r in all_rings[-1])
    coarse_rings, pooling = coarsen_rings(all_rings[-1], num_nodes)
    all_rings.append(tuple(coarse_rings))
    all_pooling.append(tuple(pooling))

  template = GraphTemplate(
      organ_names=tuple(o.name for o in organs),
      organ_labels=tuple(int(o.label) for o in organs),
      node_counts=tuple(len(r) for r in rings),
      num_levels=num_levels,
      representation="unified",
      rings=tuple(all_rings),
      pooling=tuple(all_pooling),
  )
  return template, positions
