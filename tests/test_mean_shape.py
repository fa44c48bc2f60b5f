"""Tests for arc-length resampling and the mean training contour."""

from __future__ import annotations

import numpy as np
import pytest

from mask_hybridgnet_jax.mean_shape import (
    MeanShapeError,
    mean_contour_shape,
    resample_closed,
    topmost_index,
    unified_mean_shape,
)

# A 4x4 square listed from its bottom-left corner.
SQUARE = np.array([[0.0, 4.0], [4.0, 4.0], [4.0, 0.0], [0.0, 0.0]])


def test_topmost_index_breaks_ties_by_smallest_x():
  assert topmost_index(SQUARE) == 3


def test_resample_square_from_topmost_point():
  samples = resample_closed(SQUARE, 8)
  # Perimeter 16, a sample every 2 units from (0, 0) back along the listed order.
  expected = [[0, 0], [0, 2], [0, 4], [2, 4], [4, 4], [4, 2], [4, 0], [2, 0]]
  np.testing.assert_allclose(samples, expected, atol=1e-12)


def test_resample_collapsed_polygon_repeats_its_point():
  samples = resample_closed(np.array([[3.0, 5.0], [3.0, 5.0]]), 4)
  np.testing.assert_array_equal(samples, np.tile([[3.0, 5.0]], (4, 1)))


def test_resample_rejects_empty_polygon():
  with pytest.raises(ValueError, match="non-empty"):
    resample_closed(np.zeros((0, 2)), 4)


def _example(organ_points, present):
  lengths = np.array([len(p) for p in organ_points], np.int32)
  return {"points": np.concatenate(organ_points).astype(np.float32),
          "lengths": lengths, "present": np.array(present)}


def test_mean_of_shifted_squares():
  a = _example([SQUARE, SQUARE + 10], [True, True])
  b = _example([SQUARE + 2, SQUARE + 10], [True, True])
  mean = mean_contour_shape([a, b], ("one", "two"), (8, 4))
  np.testing.assert_allclose(mean[:8], resample_closed(SQUARE + 1, 8), atol=1e-5)
  np.testing.assert_allclose(mean[8:], resample_closed(SQUARE + 10, 4), atol=1e-5)


def test_mean_skips_absent_organs():
  absent = _example([SQUARE, np.zeros((0, 2))], [True, False])
  present = _example([SQUARE, SQUARE + 6], [True, True])
  mean = mean_contour_shape([absent, present], ("one", "two"), (4, 4))
  np.testing.assert_allclose(mean[4:], resample_closed(SQUARE + 6, 4), atol=1e-5)


def test_mean_names_an_organ_absent_everywhere():
  absent = _example([SQUARE, np.zeros((0, 2))], [True, False])
  with pytest.raises(MeanShapeError, match="'two'"):
    mean_contour_shape([absent], ("one", "two"), (4, 4))


# Two unit squares side by side sharing the edge x = 1, in pixel (x, y)
# coordinates: nodes 0..5 with 1 and 4 on the shared edge.
#   0 (0,0)  1 (1,0)  2 (2,0)
#   3 (0,1)  4 (1,1)  5 (2,1)
SQUARE_NODES = np.array([[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]], np.float64)


def test_unified_mean_shape_ring_order():
  # Left ring listed from a bottom node and in negative orientation; right
  # ring already positive (x right, y down: 1 -> 2 -> 5 -> 4) from its top.
  rings = [(4, 1, 0, 3), (1, 2, 5, 4)]
  left_mean = np.array([[10.0, 0.0], [11.0, 0.0], [11.0, 1.0], [10.0, 1.0]])
  right_mean = np.array([[21.0, 0.0], [22.0, 0.0], [22.0, 1.0], [21.0, 1.0]])
  shape = unified_mean_shape(rings, SQUARE_NODES, np.concatenate([left_mean, right_mean]))
  # The left ring turned positive and rolled to its top: 0 -> 1 -> 4 -> 3.
  np.testing.assert_allclose(shape[0], [10.0, 0.0])
  np.testing.assert_allclose(shape[3], [10.0, 1.0])
  np.testing.assert_allclose(shape[2], [22.0, 0.0])
  np.testing.assert_allclose(shape[5], [22.0, 1.0])
  # Shared nodes average the two organs' points.
  np.testing.assert_allclose(shape[1], [16.0, 0.0])
  np.testing.assert_allclose(shape[4], [16.0, 1.0])


def test_unified_mean_shape_rejects_mismatched_means():
  with pytest.raises(ValueError, match=r"\(8, 2\)"):
    unified_mean_shape([(0, 1, 4, 3), (1, 2, 5, 4)], SQUARE_NODES, np.zeros((6, 2)))


def test_unified_mean_shape_rejects_uncovered_nodes():
  with pytest.raises(ValueError, match="belong to no ring"):
    unified_mean_shape([(0, 1, 4, 3)], SQUARE_NODES, np.zeros((4, 2)))
