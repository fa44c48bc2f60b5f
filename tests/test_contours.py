"""Tests for contour tracing, orientation, degenerate masks, label maps and filling."""

from __future__ import annotations

import glob
import logging
import os

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from scipy import ndimage

from mask_hybridgnet_jax import contours
from mask_hybridgnet_jax.contours import DegenerateContourError, LabelValueError
from mask_hybridgnet_jax.io.images import read_label_map
from mask_hybridgnet_jax.organs import Organ

LUNGS = (Organ("right_lung", 1), Organ("left_lung", 2))


def _disk(shape, centre, radius):
  rows, cols = np.indices(shape)
  return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2


def _random_blob(rng, size=40):
  noise = ndimage.gaussian_filter(rng.random((size, size)), rng.uniform(0.7, 3.0))
  return noise > np.quantile(noise, rng.uniform(0.3, 0.85))


def _outer_border_oracle(component):
  """Component pixels with a 4-neighbour in the background outside all holes; set of (x, y)."""
  outside = np.pad(~ndimage.binary_fill_holes(component), 1, constant_values=True)
  height, width = component.shape
  touches = np.zeros_like(component)
  for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
    touches |= outside[1 + dr:1 + dr + height, 1 + dc:1 + dc + width]
  rows, cols = np.nonzero(component & touches)
  return set(zip(cols.tolist(), rows.tolist()))


# trace_outer_boundary, signed_area, orient_positive, polygon_perimeter


def test_square_trace_exact_order():
  mask = np.zeros((8, 10), dtype=bool)
  mask[2:6, 3:8] = True  # rows 2..5, columns 3..7
  expected = ([(x, 2) for x in range(3, 8)] + [(7, y) for y in range(3, 6)] +
              [(x, 5) for x in range(6, 2, -1)] + [(3, y) for y in range(4, 2, -1)])
  points = contours.trace_outer_boundary(mask)
  assert points.dtype == np.int32
  assert points.tolist() == [list(p) for p in expected]


def test_square_corners_and_area():
  mask = np.zeros((8, 10), dtype=bool)
  mask[2:6, 3:8] = True
  points, report = contours.extract_contour(mask, source="sq.png", organ="liver")
  corners = {(3, 2), (7, 2), (7, 5), (3, 5)}
  assert corners <= set(map(tuple, points.tolist()))
  assert contours.signed_area(points) == 12.0  # (7 - 3) * (5 - 2)
  assert points.shape == (14, 2)
  assert report.num_points == 14


def test_empty_mask_trace_shape():
  assert contours.trace_outer_boundary(np.zeros((4, 4), dtype=bool)).shape == (0, 2)


def test_trace_matches_border_oracle():
  rng = np.random.default_rng(0)
  for _ in range(60):
    mask = _random_blob(rng)
    component, _, _ = contours._largest_component(mask)
    points = contours.trace_outer_boundary(mask)
    assert set(map(tuple, points.tolist())) == _outer_border_oracle(component)


def test_trace_steps_are_neighbours():
  rng = np.random.default_rng(1)
  for _ in range(30):
    points = contours.trace_outer_boundary(_random_blob(rng)).astype(np.int64)
    steps = np.abs(np.roll(points, -1, axis=0) - points).max(axis=1)
    assert np.all(steps == 1)


def test_neck_traversed_both_ways():
  mask = np.zeros((9, 9), dtype=bool)
  mask[1:4, 1:4] = True
  mask[4, 4] = True  # One-pixel diagonal neck between the two blocks.
  mask[5:8, 5:8] = True
  points = contours.trace_outer_boundary(mask).tolist()
  assert points.count([4, 4]) == 2
  assert contours.fill_polygon(np.array(points), mask.shape).tolist() == mask.tolist()


def test_signed_area_hand_value():
  triangle = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0]])
  assert contours.signed_area(triangle) == 6.0
  assert contours.signed_area(triangle[::-1]) == -6.0


def test_orient_positive_keeps_first_point():
  clockwise_up = np.array([[0, 0], [0, 3], [4, 0]])
  oriented = contours.orient_positive(clockwise_up)
  assert oriented.tolist() == [[0, 0], [4, 0], [0, 3]]


def test_orient_positive_leaves_positive():
  positive = np.array([[0, 0], [4, 0], [0, 3]])
  assert contours.orient_positive(positive).tolist() == positive.tolist()


def test_perimeter_rectangle_and_triangle():
  assert contours.polygon_perimeter(np.array([[0, 0], [4, 0], [4, 3], [0, 3]])) == 14.0
  assert contours.polygon_perimeter(np.array([[0, 0], [4, 0], [0, 3]])) == 12.0


# extract_contour


def test_full_mask_one_closed_contour():
  mask = np.ones((64, 64), dtype=bool)
  points, report = contours.extract_contour(mask, source="full.png", organ="body")
  assert points.dtype == np.float32
  assert points.shape == (4 * 63, 2)
  assert report.num_components == 1
  assert contours.signed_area(points) == 63.0 * 63.0
  assert np.array_equal(contours.fill_polygon(points, mask.shape), mask)


def test_ground_truth_orientation_positive():
  rng = np.random.default_rng(2)
  for _ in range(20):
    points, _ = contours.extract_contour(
        _random_blob(rng), source="blob", organ="o", skip_degenerate=True)
    assert points is None or contours.signed_area(points) > 0


def test_line_mask_degenerate_raises():
  mask = np.zeros((64, 64), dtype=bool)
  mask[30, 10:15] = True
  mask[20, 10] = True  # A smaller component, dropped before the check.
  with pytest.raises(DegenerateContourError) as info:
    contours.extract_contour(mask, source="case_07.png", organ="heart")
  assert "case_07.png" in str(info.value)
  assert "heart" in str(info.value)


def test_single_pixel_degenerate_raises():
  mask = np.zeros((64, 64), dtype=bool)
  mask[20, 10] = True
  with pytest.raises(DegenerateContourError, match="case_08.png: organ 'heart'.*single pixel"):
    contours.extract_contour(mask, source="case_08.png", organ="heart")


def test_diagonal_line_degenerate_raises():
  mask = np.eye(6, dtype=bool)
  with pytest.raises(DegenerateContourError, match="zero enclosed area"):
    contours.extract_contour(mask, source="d.png", organ="heart")


def test_degenerate_skip_warns(caplog):
  for indices in ([np.s_[30, 10:15], np.s_[20, 10]], [np.s_[20, 10]]):
    mask = np.zeros((64, 64), dtype=bool)
    for index in indices:
      mask[index] = True
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=contours.__name__):
      points, report = contours.extract_contour(
          mask, source="case_09.png", organ="heart", skip_degenerate=True)
    assert points is None
    assert report.degenerate
    warnings = [r.getMessage() for r in caplog.records if "degenerate" in r.getMessage()]
    assert len(warnings) == 1
    assert "case_09.png: organ 'heart'" in warnings[0]


def test_donut_outer_contour_only(caplog):
  shape, centre = (64, 64), (32, 32)
  mask = _disk(shape, centre, 20) & ~_disk(shape, centre, 8)
  with caplog.at_level(logging.WARNING, logger=contours.__name__):
    points, report = contours.extract_contour(mask, source="donut.png", organ="head")
  radii = np.hypot(points[:, 0] - centre[1], points[:, 1] - centre[0])
  assert radii.min() > 18.0  # No point on the inner circle (radius 8).
  assert report.num_holes == 1
  warnings = [r.getMessage() for r in caplog.records if "donut.png" in r.getMessage()]
  assert len(warnings) == 1
  assert "1 hole ignored" in warnings[0]
  assert np.array_equal(contours.fill_polygon(points, shape), _disk(shape, centre, 20))


def test_two_squares_keep_larger(caplog):
  mask = np.zeros((64, 64), dtype=bool)
  mask[5:15, 5:15] = True
  mask[30:50, 30:50] = True
  with caplog.at_level(logging.WARNING, logger=contours.__name__):
    points, report = contours.extract_contour(mask, source="two.png", organ="kidney")
  assert points[:, 0].min() == 30.0
  assert points[:, 1].max() == 49.0
  assert report.num_components == 2
  assert report.dropped_components == 1
  warnings = [r.getMessage() for r in caplog.records if "two.png" in r.getMessage()]
  assert len(warnings) == 1
  assert "1 component dropped" in warnings[0]


def test_equal_components_first_kept():
  mask = np.zeros((20, 20), dtype=bool)
  mask[10:14, 2:6] = True
  mask[2:6, 12:16] = True  # Same size, but starts first in raster order.
  points = contours.trace_outer_boundary(mask)
  assert points[0].tolist() == [12, 2]


def test_empty_mask_absent():
  points, report = contours.extract_contour(
      np.zeros((8, 8), dtype=bool), source="e.png", organ="o")
  assert points is None
  assert report.num_components == 0
  assert not report.degenerate


def test_fill_of_contour_matches_component():
  rng = np.random.default_rng(3)
  for _ in range(60):
    mask = _random_blob(rng)
    component, _, _ = contours._largest_component(mask)
    points, _ = contours.extract_contour(mask, source="blob", organ="o", skip_degenerate=True)
    if points is None:
      continue
    filled = contours.fill_polygon(points, mask.shape)
    assert np.array_equal(filled, ndimage.binary_fill_holes(component))


def test_montgomery_round_trip_iou(montgomery_dir):
  paths = sorted(glob.glob(os.path.join(os.fspath(montgomery_dir), "masks", "*.png")))[:5]
  assert len(paths) == 5
  for path in paths:
    masks = contours.organ_masks(read_label_map(path), LUNGS, source=path)
    for organ, mask in zip(LUNGS, masks):
      component, _, _ = contours._largest_component(mask)
      points, _ = contours.extract_contour(mask, source=path, organ=organ.name)
      filled = contours.fill_polygon(points, mask.shape)
      iou = (filled & component).sum() / (filled | component).sum()
      assert iou > 0.99, f"{path} {organ.name}: IoU {iou:.4f}"


# organ_masks


def test_organ_masks_split_by_label():
  label_map = np.array([[0, 1, 2], [2, 2, 0]])
  masks = contours.organ_masks(label_map, LUNGS, source="m.png")
  assert masks.dtype == np.bool_
  assert masks.tolist() == [[[False, True, False], [False, False, False]],
                            [[False, False, True], [True, True, False]]]


def test_binary_and_255_maps_identical():
  rng = np.random.default_rng(4)
  binary = _random_blob(rng).astype(np.int32)
  organ = (Organ("head", 1),)
  masks_01 = contours.organ_masks(binary, organ, source="a.png")
  masks_255 = contours.organ_masks(binary * 255, organ, source="b.png")
  assert np.array_equal(masks_01, masks_255)
  points_01, _ = contours.extract_contour(masks_01[0], source="a.png", organ="head")
  points_255, _ = contours.extract_contour(masks_255[0], source="b.png", organ="head")
  assert np.array_equal(points_01, points_255)


def test_255_not_special_with_two_organs():
  with pytest.raises(LabelValueError):
    contours.organ_masks(np.array([[0, 255]]), LUNGS, source="m.png")


def test_unknown_label_raises():
  label_map = np.array([[0, 1], [2, 7]])
  with pytest.raises(LabelValueError) as info:
    contours.organ_masks(label_map, LUNGS, source="bad.png")
  message = str(info.value)
  assert "bad.png" in message
  assert "[7]" in message
  assert "[0, 1, 2, 7]" in message
  assert "right_lung=1" in message
  assert "left_lung=2" in message


# fill_polygon


def test_fill_matches_matplotlib_oracle():
  rng = np.random.default_rng(5)
  height, width = 40, 50
  rows, cols = np.indices((height, width))
  centres = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float64)
  for _ in range(25):
    count = int(rng.integers(3, 30))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    radii = rng.uniform(3, 25, count)
    centre = rng.uniform([5, 5], [45, 35])
    polygon = centre + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    expected = MplPath(polygon).contains_points(centres, radius=0.0).reshape(height, width)
    off_edges = _distance_to_edges(centres, polygon).reshape(height, width) > 1e-6
    filled = contours.fill_polygon(polygon, (height, width))
    assert np.array_equal(filled[off_edges], expected[off_edges])


def _distance_to_edges(points, polygon):
  start = polygon
  end = np.roll(polygon, -1, axis=0)
  edge = end - start
  offset = points[:, None, :] - start[None, :, :]
  t = np.clip(np.sum(offset * edge, -1) / np.sum(edge * edge, -1), 0.0, 1.0)
  nearest = start[None] + t[..., None] * edge[None]
  return np.sqrt(np.sum((points[:, None, :] - nearest) ** 2, -1)).min(axis=1)


def test_fill_pentagram_centre_even_odd():
  angles = np.pi / 2 + np.arange(5) * 4 * np.pi / 5
  star = np.array([20.0, 20.0]) + 15.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
  filled = contours.fill_polygon(star, (40, 40))
  assert not filled[20, 20]  # The centre is wound twice: even, so outside.
  assert filled[30, 20]  # Inside one point of the star, whose tip is at (20, 35).


def test_fill_edge_centres_inside():
  triangle = np.array([[1.0, 1.0], [5.0, 1.0], [1.0, 5.0]])
  filled = contours.fill_polygon(triangle, (7, 7))
  expected = np.zeros((7, 7), dtype=bool)
  for y in range(1, 6):
    expected[y, 1:7 - y] = True  # x + y <= 6 on and inside the hypotenuse.
  assert np.array_equal(filled, expected)


def test_fill_clips_outside_image():
  square = np.array([[-5.0, -5.0], [2.0, -5.0], [2.0, 2.0], [-5.0, 2.0]])
  expected = np.zeros((5, 5), dtype=bool)
  expected[:3, :3] = True
  assert np.array_equal(contours.fill_polygon(square, (5, 5)), expected)


def test_fill_rejects_nan():
  with pytest.raises(ValueError, match="NaN"):
    contours.fill_polygon(np.array([[0.0, 0.0], [np.nan, 1.0], [1.0, 1.0]]), (4, 4))


def test_fill_polygons_absent_and_order():
  square = np.array([[1, 1], [2, 1], [2, 2], [1, 2]])
  masks = contours.fill_polygons({"left_lung": square, "right_lung": None}, LUNGS, (4, 4))
  assert masks.shape == (2, 4, 4)
  assert not masks[0].any()
  assert masks[1].sum() == 4


def test_fill_polygons_unknown_organ_raises():
  with pytest.raises(ValueError, match="heart"):
    contours.fill_polygons({"heart": np.zeros((3, 2))}, LUNGS, (4, 4))
