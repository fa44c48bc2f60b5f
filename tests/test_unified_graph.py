"""Unified graph templates on hand-made masks whose shared nodes are known."""

import jax.numpy as jnp
import numpy as np
import pytest

from mask_hybridgnet_jax.losses.chamfer import chamfer_loss
from mask_hybridgnet_jax.losses.edges import edge_losses
from mask_hybridgnet_jax.organs import Organ
from mask_hybridgnet_jax.topology import GraphTemplate, TopologyError
from mask_hybridgnet_jax.unified_graph import (
    build_unified_template, coarsen_rings, merge_nodes, node_degrees, resample_ring)

ORGANS = (Organ("left", 1), Organ("right", 2))


def two_squares(gap: int = 0) -> np.ndarray:
  """Two 8 x 8 squares in one row, `gap` background columns between them.

  The left square covers columns 2..9 and rows 2..9. Its boundary has 28
  pixels, so 28 nodes put one node on every boundary pixel.
  """
  label_map = np.zeros((12, 20 + gap), np.int32)
  label_map[2:10, 2:10] = 1
  label_map[2:10, 10 + gap:18 + gap] = 2
  return label_map


@pytest.fixture(scope="module")
def squares():
  return build_unified_template(two_squares(), ORGANS, (28, 28), num_levels=3)


def test_shared_edge_nodes_merge(squares):
  template, positions = squares
  shared = sorted(set(template.rings[0][0]) & set(template.rings[0][1]))
  # The common side: left column 9 and right column 10 meet at x = 9.5.
  expected = [(9.5, float(y)) for y in range(2, 10)]
  assert template.num_nodes(0) == 28 + 28 - 8
  assert len(shared) == 8
  assert sorted(map(tuple, positions[shared].tolist())) == expected


def test_junctions_are_common_side_ends(squares):
  template, positions = squares
  degrees = node_degrees(template.rings[0], template.num_nodes(0))
  junctions = np.flatnonzero(degrees == 3)
  assert sorted(map(tuple, positions[junctions].tolist())) == [(9.5, 2.0), (9.5, 9.0)]
  assert np.all(degrees[degrees != 3] == 2)


def test_rings_keep_organ_node_counts(squares):
  template, _ = squares
  assert template.level_node_counts(0) == (28, 28)
  assert template.node_counts == (28, 28)


def test_junctions_survive_every_level(squares):
  template, _ = squares
  degrees = node_degrees(template.rings[0], template.num_nodes(0))
  current = set(np.flatnonzero(degrees == 3).tolist())
  for level in range(template.num_levels - 1):
    groups = template.pooling[level]
    coarse = {c for c, group in enumerate(groups) if set(group) & current}
    # Each junction is pooled alone and stays a junction one level down.
    assert all(len(groups[c]) == 1 for c in coarse)
    coarse_degrees = node_degrees(template.rings[level + 1], template.num_nodes(level + 1))
    assert all(coarse_degrees[c] == 3 for c in coarse)
    assert len(coarse) == 2
    current = coarse


def test_coarsening_pairs_only_degree_two(squares):
  template, _ = squares
  for level in range(template.num_levels - 1):
    degrees = node_degrees(template.rings[level], template.num_nodes(level))
    for group in template.pooling[level]:
      if len(group) == 2:
        assert degrees[group[0]] == 2, group
        assert degrees[group[1]] == 2, group


def test_unpooling_copies_pooled_node(squares):
  template, _ = squares
  upsample = template.upsample(0)
  downsample = template.downsample(0)
  np.testing.assert_array_equal(np.sort(np.unique(upsample)), [0.0, 1.0])
  np.testing.assert_array_equal(upsample.sum(axis=1), np.ones(template.num_nodes(0)))
  # Pooling then unpooling a constant per coarse node returns it unchanged.
  coarse_values = np.arange(template.num_nodes(1), dtype=np.float32)
  np.testing.assert_allclose(downsample @ (upsample @ coarse_values), coarse_values)


def test_adjacency_counts_shared_edge_once(squares):
  template, _ = squares
  adjacency = template.adjacency(0)
  # 28 ring edges per square, 7 of them on the common side counted once.
  assert adjacency.sum() / 2 == 28 + 28 - 7
  np.testing.assert_array_equal(adjacency, adjacency.T)


def test_separate_organs_match_independent():
  unified, _ = build_unified_template(two_squares(gap=4), ORGANS, (16, 16), num_levels=3)
  independent = GraphTemplate(("left", "right"), (1, 2), (16, 16), 3)
  for level in range(3):
    np.testing.assert_array_equal(unified.adjacency(level), independent.adjacency(level))
  for level in range(2):
    np.testing.assert_array_equal(unified.downsample(level), independent.downsample(level))


def test_save_load_round_trip(squares, tmp_path):
  template, _ = squares
  path = tmp_path / "topology.json"
  template.save(path)
  loaded = GraphTemplate.load(path)
  assert loaded == template
  assert loaded.differences(template) == []


def test_differences_name_structure_change(squares):
  template, _ = squares
  apart, _ = build_unified_template(two_squares(gap=4), ORGANS, (28, 28), num_levels=3)
  differences = template.differences(apart)
  assert len(differences) == 1
  assert "shared-node structure" in differences[0]


def test_organ_slices_rejected_for_unified(squares):
  template, _ = squares
  with pytest.raises(TopologyError, match="organ_indices"):
    template.organ_slices(0)


def test_inconsistent_pooling_rejected(squares):
  template, _ = squares
  data = template.to_dict()
  data["pooling"][0][0], data["pooling"][0][1] = data["pooling"][0][1], data["pooling"][0][0]
  with pytest.raises(TopologyError, match="not its level-0 ring after pooling"):
    GraphTemplate.from_dict(data)


def test_missing_organ_rejected():
  label_map = two_squares()
  label_map[label_map == 2] = 0
  with pytest.raises(TopologyError, match="'right'.*absent"):
    build_unified_template(label_map, ORGANS, (28, 28), num_levels=3)


def test_merge_keeps_one_node_per_organ():
  a = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
  # Both b[0] and b[1] lie within 1.8 px of a[0]; only the closer one merges.
  b = np.array([[0.4, 0.0], [-0.6, 0.0], [-5.0, -5.0], [0.0, -5.0]])
  rings, positions = merge_nodes([a, b], 1.8)
  assert rings[0] == (0, 1, 2, 3)
  assert rings[1] == (0, 4, 5, 6)
  np.testing.assert_allclose(positions[0], [0.2, 0.0])


def test_coarsen_plain_ring_pairs_neighbours():
  rings, pooling = coarsen_rings([(0, 1, 2, 3, 4, 5)], 6)
  assert pooling == [(0, 1), (2, 3), (4, 5)]
  assert rings == [(0, 1, 2)]


def test_resample_square_by_arc_length():
  square = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]])
  expected = [[0, 0], [2, 0], [4, 0], [4, 2], [4, 4], [2, 4], [0, 4], [0, 2]]
  np.testing.assert_allclose(resample_ring(square, 8), expected)


def _ring_positions(template, positions):
  """Concatenate each organ's ring nodes, the layout of an independent template."""
  return jnp.concatenate([positions[:, index] for index in template.organ_indices(0)], axis=1)


def _batch(num_points):
  rng = np.random.default_rng(0)
  points = rng.uniform(0.1, 0.9, (2, 2, num_points, 2)).astype(np.float32)
  return {
      "points": jnp.asarray(points),
      "lengths": jnp.asarray([[num_points, 5], [3, num_points]], jnp.int32),
      "present": jnp.asarray([[True, True], [True, False]]),
      "valid": jnp.asarray([True, True]),
  }


def test_losses_walk_each_ring(squares):
  template, node_positions = squares
  independent = GraphTemplate(("left", "right"), (1, 2), (28, 28), 3)
  rng = np.random.default_rng(1)
  positions = jnp.asarray(
      node_positions[None] / 24.0 + rng.normal(0, 0.01, (2, template.num_nodes(0), 2)),
      jnp.float32)
  batch = _batch(12)
  rings = _ring_positions(template, positions)
  np.testing.assert_allclose(
      chamfer_loss(positions, batch, template, 0), chamfer_loss(rings, batch, independent, 0),
      rtol=1e-6)
  unified_edges = edge_losses(positions, template, 0, batch["present"], batch["valid"])
  independent_edges = edge_losses(rings, independent, 0, batch["present"], batch["valid"])
  for name in ("same_length", "elasticity", "curvature"):
    np.testing.assert_allclose(unified_edges[name], independent_edges[name], rtol=1e-6)


def test_chamfer_uses_every_organ_node(squares):
  template, node_positions = squares
  positions = jnp.asarray(node_positions[None] / 24.0, jnp.float32)
  left_ring = np.asarray(template.rings[0][0])
  # Ground truth for "left" only: its own ring nodes, so the loss is 0 when
  # every one of its nodes, shared ones included, is compared.
  points = np.zeros((1, 2, 28, 2), np.float32)
  points[0, 0] = node_positions[left_ring] / 24.0
  batch = {"points": jnp.asarray(points), "lengths": jnp.asarray([[28, 0]], jnp.int32),
           "present": jnp.asarray([[True, False]]), "valid": jnp.asarray([True])}
  assert float(chamfer_loss(positions, batch, template, 0)) == 0.0
