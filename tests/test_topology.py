"""Tests for graph templates: node-count rule, ring graphs, pooling operators, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mask_hybridgnet_jax.organs import DatasetMetadata, Organ
from mask_hybridgnet_jax.topology import (
    GraphTemplate,
    TopologyError,
    nodes_for_organ,
    scaled_laplacian_from_adjacency,
)


def _ring4() -> GraphTemplate:
  return GraphTemplate(("heart",), (1,), (4,), num_levels=1)


def _two_organs() -> GraphTemplate:
  return GraphTemplate(("left", "right"), (1, 2), (4, 8), num_levels=1)


# Node-count rule.


@pytest.mark.parametrize(
    "mean_length, scale, num_levels, expected",
    [
        (100.0, 0.05, 3, 64),  # round(5) = 5 -> 4 * round(1.25) = 4 < 16 * 4
        (2000.0, 0.1, 3, 200),  # round(200) = 200 -> 4 * 50
        (1234.0, 0.1, 3, 124),  # round(123.4) = 123 -> 4 * round(30.75) = 124
        (1234.0, 0.1, 1, 123),  # f = 1: the rounded length itself
        (0.0, 0.1, 2, 32),  # floor 16 * f
        (5000.0, 0.05, 4, 248),  # round(250) = 250 -> 8 * round(31.25) = 248
    ],
)
def test_nodes_for_organ_examples(mean_length, scale, num_levels, expected):
  assert nodes_for_organ(mean_length, scale, num_levels) == expected


@pytest.mark.parametrize(
    "mean_length, scale, num_levels",
    [(float("nan"), 0.1, 3), (-1.0, 0.1, 3), (100.0, 0.0, 3), (100.0, 0.1, 0)],
)
def test_nodes_for_organ_invalid_input(mean_length, scale, num_levels):
  with pytest.raises(TopologyError):
    nodes_for_organ(mean_length, scale, num_levels)


# Graph structure.


def test_ring4_senders_receivers():
  graph = _ring4().graph(0)
  np.testing.assert_array_equal(graph.senders, [0, 0, 1, 1, 2, 2, 3, 3])
  np.testing.assert_array_equal(graph.receivers, [1, 3, 0, 2, 1, 3, 0, 2])


def test_ring4_graph_counts():
  graph = _ring4().graph(0)
  np.testing.assert_array_equal(graph.n_node, [4])
  np.testing.assert_array_equal(graph.n_edge, [8])


def test_ring4_edge_weights():
  # Every node has degree 2, so each weight is -1 / sqrt(2 * 2).
  np.testing.assert_allclose(_ring4().graph(0).edges, np.full(8, -0.5))


def test_ring4_adjacency():
  expected = np.array(
      [
          [0, 1, 0, 1],
          [1, 0, 1, 0],
          [0, 1, 0, 1],
          [1, 0, 1, 0],
      ],
      np.float32,
  )
  np.testing.assert_array_equal(_ring4().adjacency(0), expected)


def test_two_organs_senders_receivers():
  graph = _two_organs().graph(0)
  # Organ "left" is nodes 0..3, organ "right" is nodes 4..11; no edge crosses.
  expected_senders = [0, 0, 1, 1, 2, 2, 3, 3,
                      4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11]
  expected_receivers = [1, 3, 0, 2, 1, 3, 0, 2,
                        5, 11, 4, 6, 5, 7, 6, 8, 7, 9, 8, 10, 9, 11, 4, 10]
  np.testing.assert_array_equal(graph.senders, expected_senders)
  np.testing.assert_array_equal(graph.receivers, expected_receivers)


def test_two_organs_adjacency_block_diagonal():
  adjacency = _two_organs().adjacency(0)
  np.testing.assert_array_equal(adjacency[:4, 4:], np.zeros((4, 8)))
  np.testing.assert_array_equal(adjacency[4:, :4], np.zeros((8, 4)))


def test_two_organs_adjacency_wraps_within_organ():
  adjacency = _two_organs().adjacency(0)
  assert adjacency[4, 11] == 1.0
  assert adjacency[11, 4] == 1.0
  assert adjacency[0, 3] == 1.0


def test_graph_arrays_are_read_only():
  graph = _ring4().graph(0)
  with pytest.raises(ValueError):
    graph.senders[0] = 3


# Laplacian.


def test_laplacian_golden_ring4():
  laplacian = _ring4().scaled_laplacian(0)
  x = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
  np.testing.assert_allclose(laplacian @ x, [0.0, -0.5, 0.0, -0.5])


def test_laplacian_degree_zero_node_is_zero():
  adjacency = np.zeros((5, 5), np.float32)
  adjacency[:4, :4] = _ring4().adjacency(0)
  laplacian = scaled_laplacian_from_adjacency(adjacency)
  np.testing.assert_array_equal(laplacian[4], np.zeros(5))
  np.testing.assert_array_equal(laplacian[:, 4], np.zeros(5))


def test_laplacian_unequal_degrees():
  # Path 0 - 1 - 2: degrees (1, 2, 1), so L[0, 1] = -1 / sqrt(2).
  adjacency = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.float32)
  laplacian = scaled_laplacian_from_adjacency(adjacency)
  expected = -np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]]) / np.sqrt(2.0)
  np.testing.assert_allclose(laplacian, expected, rtol=1e-6)


def test_graph_edges_match_laplacian_product():
  template = GraphTemplate(("a", "b"), (1, 2), (8, 12), num_levels=2)
  graph = template.graph(1)
  laplacian = template.scaled_laplacian(1)
  x = np.random.default_rng(0).normal(size=template.num_nodes(1))
  by_edges = np.zeros_like(x)
  np.add.at(by_edges, graph.receivers, graph.edges * x[graph.senders])
  np.testing.assert_allclose(by_edges, laplacian @ x, rtol=1e-5, atol=1e-6)


# Pooling operators for one organ with 8 nodes.


def test_downsample_n8():
  template = GraphTemplate(("a",), (1,), (8,), num_levels=2)
  h = 0.5
  expected = np.array(
      [
          [h, h, 0, 0, 0, 0, 0, 0],
          [0, 0, h, h, 0, 0, 0, 0],
          [0, 0, 0, 0, h, h, 0, 0],
          [0, 0, 0, 0, 0, 0, h, h],
      ],
      np.float32,
  )
  np.testing.assert_array_equal(template.downsample(0), expected)


def test_upsample_n8():
  template = GraphTemplate(("a",), (1,), (8,), num_levels=2)
  h = 0.5
  expected = np.array(
      [
          [1, 0, 0, 0],
          [h, h, 0, 0],
          [0, 1, 0, 0],
          [0, h, h, 0],
          [0, 0, 1, 0],
          [0, 0, h, h],
          [0, 0, 0, 1],
          [h, 0, 0, h],
      ],
      np.float32,
  )
  np.testing.assert_array_equal(template.upsample(0), expected)


def test_pooling_two_organs_block_diagonal():
  template = GraphTemplate(("a", "b"), (1, 2), (8, 16), num_levels=2)
  upsample = template.upsample(0)
  downsample = template.downsample(0)
  np.testing.assert_array_equal(upsample[:8, 4:], np.zeros((8, 8)))
  np.testing.assert_array_equal(upsample[8:, :4], np.zeros((16, 4)))
  np.testing.assert_array_equal(downsample[:4, 8:], np.zeros((4, 16)))
  # Last fine node of organ "b" averages its last and first coarse nodes.
  assert upsample[23, 11] == 0.5
  assert upsample[23, 4] == 0.5


def test_pooling_shapes_three_levels():
  template = GraphTemplate(("a", "b"), (1, 2), (64, 80), num_levels=3)
  assert template.downsample(1).shape == (36, 72)
  assert template.upsample(1).shape == (72, 36)


def test_pooling_invalid_level():
  template = GraphTemplate(("a",), (1,), (64,), num_levels=3)
  with pytest.raises(TopologyError, match="level 2"):
    template.upsample(2)


# Levels and slices.


def test_level_node_counts():
  template = GraphTemplate(("a", "b"), (1, 2), (64, 80), num_levels=3)
  assert template.level_node_counts(2) == (16, 20)
  assert template.num_nodes(1) == 72


def test_organ_slices():
  template = GraphTemplate(("a", "b"), (1, 2), (64, 80), num_levels=3)
  assert template.organ_slices(1) == (slice(0, 32), slice(32, 72))


# Validation.


def test_node_count_not_divisible_names_organ():
  with pytest.raises(TopologyError, match=r"'lung'.*70.*divisible by 4"):
    GraphTemplate(("lung",), (1,), (70,), num_levels=3)


def test_too_few_coarsest_nodes_names_organ():
  with pytest.raises(TopologyError, match=r"'lung'.*12.*at least 16"):
    GraphTemplate(("lung",), (1,), (12,), num_levels=3)


def test_mismatched_label_count():
  with pytest.raises(TopologyError, match="labels"):
    GraphTemplate(("a", "b"), (1,), (64, 64))


def test_mismatched_node_count_length():
  with pytest.raises(TopologyError, match="node counts"):
    GraphTemplate(("a", "b"), (1, 2), (64,))


def test_duplicate_organ_names():
  with pytest.raises(TopologyError, match="duplicates"):
    GraphTemplate(("a", "a"), (1, 2), (64, 64))


def test_unknown_representation():
  with pytest.raises(TopologyError, match="unified"):
    GraphTemplate(("a",), (1,), (64,), representation="unified")


def test_lists_become_tuples_and_hash():
  template = GraphTemplate(["a", "b"], [1, 2], [64, 80])
  assert template == GraphTemplate(("a", "b"), (1, 2), (64, 80))
  assert hash(template) == hash(GraphTemplate(("a", "b"), (1, 2), (64, 80)))


# Construction from boundary lengths.


def test_from_boundary_lengths_rule_and_override():
  organs = (Organ("right_lung", 1), Organ("heart", 2))
  template = GraphTemplate.from_boundary_lengths(
      organs, {"right_lung": 2000.0, "heart": 100.0}, scale=0.1, overrides={"heart": 80})
  assert template.node_counts == (200, 80)
  assert template.organ_labels == (1, 2)


def test_from_boundary_lengths_accepts_metadata():
  metadata = DatasetMetadata(organs=(Organ("right_lung", 1), Organ("heart", 2)))
  template = GraphTemplate.from_boundary_lengths(
      metadata, {"right_lung": 2000.0, "heart": 100.0}, scale=0.1)
  assert template.organ_names == ("right_lung", "heart")
  assert template.node_counts == (200, 64)


def test_from_boundary_lengths_missing_length():
  organs = (Organ("right_lung", 1), Organ("heart", 2))
  with pytest.raises(TopologyError, match="'heart'"):
    GraphTemplate.from_boundary_lengths(organs, {"right_lung": 2000.0}, scale=0.1)


def test_from_boundary_lengths_nan_length_names_organ():
  organs = (Organ("heart", 2),)
  with pytest.raises(TopologyError, match="'heart'.*override"):
    GraphTemplate.from_boundary_lengths(organs, {"heart": float("nan")}, scale=0.1)


def test_from_boundary_lengths_unknown_override():
  organs = (Organ("heart", 2),)
  with pytest.raises(TopologyError, match="liver"):
    GraphTemplate.from_boundary_lengths(
        organs, {"heart": 500.0}, scale=0.1, overrides={"liver": 64})


def test_from_boundary_lengths_invalid_override():
  organs = (Organ("heart", 2),)
  with pytest.raises(TopologyError, match=r"'heart'.*66"):
    GraphTemplate.from_boundary_lengths(
        organs, {"heart": 500.0}, scale=0.1, overrides={"heart": 66})


# Serialisation.


def test_json_round_trip(tmp_path):
  template = GraphTemplate(("left", "right"), (3, 7), (64, 80), num_levels=3)
  path = tmp_path / "sub" / "topology.json"
  template.save(path)
  assert GraphTemplate.load(path) == template


def test_saved_json_content(tmp_path):
  template = GraphTemplate(("left",), (3,), (64,), num_levels=3)
  path = tmp_path / "topology.json"
  template.save(path)
  data = json.loads(path.read_text())
  assert data["organs"] == [{"name": "left", "label": 3, "nodes": 64}]
  assert data["num_levels"] == 3


def test_save_leaves_no_temporary_file(tmp_path):
  GraphTemplate(("left",), (3,), (64,)).save(tmp_path / "topology.json")
  assert [p.name for p in tmp_path.iterdir()] == ["topology.json"]


def test_load_missing_file(tmp_path):
  with pytest.raises(TopologyError, match="not found"):
    GraphTemplate.load(tmp_path / "missing.json")


def test_load_invalid_node_count_names_file(tmp_path):
  data = GraphTemplate(("left",), (3,), (64,)).to_dict()
  data["organs"][0]["nodes"] = 62
  path = tmp_path / "topology.json"
  path.write_text(json.dumps(data))
  with pytest.raises(TopologyError, match=r"topology\.json.*'left'.*62"):
    GraphTemplate.load(path)


def test_from_dict_wrong_format():
  with pytest.raises(TopologyError, match="format"):
    GraphTemplate.from_dict({"organs": []})


# Differences.


def test_differences_equal_templates():
  template = GraphTemplate(("a", "b"), (1, 2), (64, 80))
  assert template.differences(GraphTemplate(("a", "b"), (1, 2), (64, 80))) == []


def test_differences_node_count():
  this = GraphTemplate(("a", "b"), (1, 2), (64, 80))
  other = GraphTemplate(("a", "b"), (1, 2), (64, 96))
  assert this.differences(other) == [
      "organ 'b': 80 nodes in this template, 96 in other template."]


def test_differences_levels_and_missing_organ():
  this = GraphTemplate(("a", "b"), (1, 2), (64, 80), num_levels=3)
  other = GraphTemplate(("a", "c"), (1, 2), (64, 80), num_levels=2)
  diffs = this.differences(other, this_name="checkpoint", other_name="dataset")
  assert diffs == [
      "organ(s) ['b'] only in checkpoint.",
      "organ(s) ['c'] only in dataset.",
      "resolution levels: 3 in checkpoint, 2 in dataset.",
  ]


def test_differences_order_and_label():
  this = GraphTemplate(("a", "b"), (1, 2), (64, 80))
  other = GraphTemplate(("b", "a"), (5, 1), (80, 64))
  diffs = this.differences(other)
  assert diffs == [
      "organ order differs: this template has ['a', 'b'], other template has ['b', 'a'].",
      "organ 'b': label 2 in this template, 5 in other template.",
  ]
