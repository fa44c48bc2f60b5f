"""Tests for Dice, surface distances, the empty-mask policy and summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from mask_hybridgnet_jax import metrics


def _square(top, left, side=10, shape=(40, 40)):
  mask = np.zeros(shape, dtype=bool)
  mask[top:top + side, left:left + side] = True
  return mask


def _surface_oracle(mask):
  """Pixels of `mask` with a 4-neighbour that is background or off the image; [n, 2] (row, col)."""
  height, width = mask.shape
  points = []
  for r in range(height):
    for c in range(width):
      if not mask[r, c]:
        continue
      for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        rr, cc = r + dr, c + dc
        if not (0 <= rr < height and 0 <= cc < width) or not mask[rr, cc]:
          points.append((r, c))
          break
  return np.array(points, dtype=np.float64)


def _assd_oracle(a, b, spacing):
  surface_a = _surface_oracle(a) * spacing
  surface_b = _surface_oracle(b) * spacing
  difference = surface_a[:, None, :] - surface_b[None, :, :]
  distance = np.sqrt(np.sum(difference * difference, axis=-1))
  return float(np.mean(np.concatenate([distance.min(axis=1), distance.min(axis=0)])))


def test_dice_hand_value():
  # Overlap 10 x 7 = 70 pixels of two 100-pixel squares: 2 * 70 / 200.
  assert metrics.dice(_square(10, 10), _square(10, 13)) == pytest.approx(0.7)


def test_prediction_empty_gives_nan_distances():
  empty = np.zeros((40, 40), dtype=bool)
  gt = _square(10, 10)
  assert metrics.dice(empty, gt) == 0.0
  assert math.isnan(metrics.hausdorff(empty, gt))
  assert math.isnan(metrics.assd(empty, gt))


def test_ground_truth_empty_gives_nan_distances():
  empty = np.zeros((40, 40), dtype=bool)
  assert math.isnan(metrics.hausdorff(_square(5, 5), empty))
  assert math.isnan(metrics.assd(_square(5, 5), empty))


def test_both_empty_perfect():
  empty = np.zeros((40, 40), dtype=bool)
  assert metrics.dice(empty, empty) == 1.0
  assert metrics.hausdorff(empty, empty) == 0.0
  assert metrics.assd(empty, empty) == 0.0


def test_surface_distances_to_empty_are_nan():
  empty = np.zeros((40, 40), dtype=bool)
  a_to_b, b_to_a = metrics.surface_distances(_square(5, 5), empty)
  assert a_to_b.shape == (36,)  # Border pixels of a 10 x 10 square.
  assert np.isnan(a_to_b).all()
  assert b_to_a.shape == (0,)


def test_hausdorff_offset_pixels():
  assert metrics.hausdorff(_square(10, 10), _square(10, 13)) == 3.0


def test_hausdorff_column_offset_mm():
  # Offset along columns; one column is 1.0 mm.
  assert metrics.hausdorff(_square(10, 10), _square(10, 13), spacing=(2.0, 1.0)) == 3.0


def test_hausdorff_row_offset_mm():
  # Offset along rows; one row is 2.0 mm, so 3 rows are 6.0 mm.
  assert metrics.hausdorff(_square(10, 10), _square(13, 10), spacing=(2.0, 1.0)) == 6.0


def test_assd_matches_brute_force():
  rng = np.random.default_rng(0)
  for spacing in ((1.0, 1.0), (0.7, 1.3)):
    for _ in range(5):
      a = ndimage.gaussian_filter(rng.random((24, 28)), 2.0)
      b = ndimage.gaussian_filter(rng.random((24, 28)), 2.0)
      mask_a = a > np.quantile(a, 0.6)
      mask_b = b > np.quantile(b, 0.5)
      expected = _assd_oracle(mask_a, mask_b, np.array(spacing))
      assert metrics.assd(mask_a, mask_b, spacing) == pytest.approx(expected, rel=1e-12)


def test_hausdorff_matches_brute_force():
  rng = np.random.default_rng(1)
  for _ in range(5):
    mask_a = ndimage.gaussian_filter(rng.random((20, 20)), 1.5) > 0.5
    mask_b = ndimage.gaussian_filter(rng.random((20, 20)), 1.5) > 0.5
    surface_a, surface_b = _surface_oracle(mask_a), _surface_oracle(mask_b)
    difference = surface_a[:, None, :] - surface_b[None, :, :]
    distance = np.sqrt(np.sum(difference * difference, axis=-1))
    expected = max(distance.min(axis=1).max(), distance.min(axis=0).max())
    assert metrics.hausdorff(mask_a, mask_b) == pytest.approx(expected, rel=1e-12)


def test_identical_masks_zero_distance():
  mask = _square(3, 4)
  assert metrics.hausdorff(mask, mask) == 0.0
  assert metrics.assd(mask, mask) == 0.0


def test_image_edge_counts_as_surface():
  full = np.ones((6, 6), dtype=bool)
  inner = np.zeros((6, 6), dtype=bool)
  inner[1:5, 1:5] = True
  # Without image-edge surface pixels `full` would have no surface (NaN).
  # The corner (0, 0) is farthest: sqrt(2) from the inner corner (1, 1).
  assert metrics.hausdorff(full, inner) == math.sqrt(2.0)


def test_spacing_rejects_non_positive():
  with pytest.raises(ValueError, match="row_mm, col_mm"):
    metrics.hausdorff(_square(1, 1), _square(2, 2), spacing=(0.0, 1.0))


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match="equal shapes"):
    metrics.dice(np.zeros((4, 4), dtype=bool), np.zeros((4, 5), dtype=bool))


def test_evaluate_organs_rows():
  pred = np.stack([_square(10, 10), np.zeros((40, 40), dtype=bool)])
  gt = np.stack([_square(10, 13), _square(0, 0)])
  rows = metrics.evaluate_organs(pred, gt, ["liver", "spleen"], spacing=(2.0, 1.0))
  assert [row["organ"] for row in rows] == ["liver", "spleen"]
  assert rows[0]["dice"] == pytest.approx(0.7)
  assert rows[0]["hausdorff"] == 3.0
  assert rows[0]["unit"] == "mm"
  assert rows[1]["dice"] == 0.0
  assert math.isnan(rows[1]["assd"])


def test_evaluate_organs_pixels_unit():
  rows = metrics.evaluate_organs(_square(1, 1)[None], _square(1, 1)[None], ["liver"])
  assert rows[0]["unit"] == "px"


def test_evaluate_organs_name_count_raises():
  with pytest.raises(ValueError, match="1 organ names for 2"):
    metrics.evaluate_organs(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), ["liver"])


def test_summarize_counts_missing():
  empty = np.zeros((40, 40), dtype=bool)
  rows = (metrics.evaluate_organs(empty[None], _square(10, 10)[None], ["liver"]) +
          metrics.evaluate_organs(_square(10, 10)[None], _square(10, 13)[None], ["liver"]))
  summary = metrics.summarize(rows)["liver"]
  assert summary["count"] == 2
  assert summary["missing_distances"] == 1
  assert summary["hausdorff_mean"] == 3.0  # The NaN row is left out.
  assert summary["hausdorff_std"] == 0.0
  assert summary["dice_mean"] == pytest.approx(0.35)  # (0 + 0.7) / 2
  assert summary["dice_std"] == pytest.approx(0.35)
  assert summary["unit"] == "px"


def test_summarize_all_missing_nan():
  rows = [{"organ": "liver", "dice": 0.0, "hausdorff": math.nan, "assd": math.nan,
           "unit": "px"}]
  summary = metrics.summarize(rows)["liver"]
  assert math.isnan(summary["assd_mean"])
  assert summary["missing_distances"] == 1


def test_summarize_mixed_units_raises():
  rows = [{"organ": "liver", "dice": 1.0, "hausdorff": 0.0, "assd": 0.0, "unit": "px"},
          {"organ": "liver", "dice": 1.0, "hausdorff": 0.0, "assd": 0.0, "unit": "mm"}]
  with pytest.raises(ValueError, match="mix units"):
    metrics.summarize(rows)


def test_policy_text_states_rules():
  assert "Dice is 1" in metrics.EMPTY_MASK_POLICY
  assert "NaN" in metrics.EMPTY_MASK_POLICY
