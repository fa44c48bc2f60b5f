"""Tests for the square transform, intensity normalisation and resizing."""

from __future__ import annotations

import numpy as np
import pytest

from mask_hybridgnet_jax import preprocess
from mask_hybridgnet_jax.preprocess import SquareTransform


def test_constant_image_gives_zeros():
  result = preprocess.normalize_intensity(np.full((5, 6), 7.0))
  assert result.dtype == np.float32
  assert np.array_equal(result, np.zeros((5, 6), dtype=np.float32))


def test_constant_image_prepared_without_nan():
  network_image, _ = preprocess.prepare_image(np.full((30, 20), 7, dtype=np.uint16), 16)
  assert not np.isnan(network_image).any()
  assert np.array_equal(network_image, np.zeros((16, 16), dtype=np.float32))


def test_normalize_min_max():
  result = preprocess.normalize_intensity(np.array([[10.0, 20.0], [30.0, 50.0]]))
  np.testing.assert_allclose(result, [[0.0, 0.25], [0.5, 1.0]])


def test_normalize_rejects_nan():
  with pytest.raises(ValueError, match="NaN"):
    preprocess.normalize_intensity(np.array([[0.0, np.nan]]))


def test_transform_properties_hand_values():
  transform = SquareTransform(height=100, width=60, size=50)
  assert transform.side == 100
  assert transform.pad_top == 0
  assert transform.pad_left == 20
  assert transform.scale == 0.5


def test_to_network_hand_value():
  transform = SquareTransform(height=100, width=60, size=50)
  # ((10 + 20 + 0.5) * 0.5 - 0.5, (4 + 0 + 0.5) * 0.5 - 0.5)
  np.testing.assert_allclose(transform.to_network(np.array([10.0, 4.0])), [14.75, 1.75])
  np.testing.assert_allclose(transform.to_normalized(np.array([10.0, 4.0])), [0.295, 0.035])


def test_normalized_round_trip():
  rng = np.random.default_rng(0)
  points = rng.uniform(-5, 300, size=(7, 3, 2))
  for height, width, size in [(100, 60, 50), (37, 53, 64), (512, 512, 256), (20, 30, 128)]:
    transform = SquareTransform(height, width, size)
    back = transform.from_normalized(transform.to_normalized(points))
    np.testing.assert_allclose(back, points, rtol=0, atol=1e-9)


def test_network_round_trip():
  transform = SquareTransform(41, 77, 64)
  points = np.random.default_rng(1).uniform(0, 64, size=(10, 2))
  np.testing.assert_allclose(
      transform.to_network(transform.from_network(points)), points, rtol=0, atol=1e-9)


def test_transform_rejects_bad_size():
  with pytest.raises(ValueError, match="size"):
    SquareTransform(10, 10, 0)


def test_points_need_last_axis_two():
  with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
    SquareTransform(10, 10, 10).to_network(np.zeros((4, 3)))


def _bright_pixel_offsets(height, width, size, seed):
  """Distance between the brightest network pixel and where to_network puts the bright pixel."""
  rng = np.random.default_rng(seed)
  offsets = []
  for _ in range(15):
    # Away from the border, where the resize filter's truncated support
    # flattens the peak.
    row, col = int(rng.integers(2, height - 2)), int(rng.integers(2, width - 2))
    image = np.zeros((height, width))
    image[row, col] = 3.0
    network_image, transform = preprocess.prepare_image(image, size)
    peak_row, peak_col = np.unravel_index(np.argmax(network_image), network_image.shape)
    mapped = transform.to_network(np.array([col, row], dtype=np.float64))
    offsets.append(max(abs(peak_col - mapped[0]), abs(peak_row - mapped[1])))
  return np.array(offsets)


def test_bright_pixel_downscale_consistent():
  assert _bright_pixel_offsets(200, 100, 64, seed=2).max() <= 0.5 + 1e-9


def test_bright_pixel_upscale_consistent():
  assert _bright_pixel_offsets(30, 45, 64, seed=3).max() <= 0.5 + 1e-9


def test_downscale_centroid_matches_mapping():
  image = np.zeros((300, 300))
  image[101, 187] = 1.0
  network_image, transform = preprocess.prepare_image(image, 60)
  weights = network_image / network_image.sum()
  centroid_x = float((weights.sum(axis=0) * np.arange(60)).sum())
  centroid_y = float((weights.sum(axis=1) * np.arange(60)).sum())
  mapped = transform.to_network(np.array([187.0, 101.0]))
  assert abs(centroid_x - mapped[0]) < 0.05
  assert abs(centroid_y - mapped[1]) < 0.05


def test_prepare_image_range_and_dtype():
  image = np.random.default_rng(4).integers(0, 4096, size=(90, 70)).astype(np.uint16)
  network_image, _ = preprocess.prepare_image(image, 32)
  assert network_image.shape == (32, 32)
  assert network_image.dtype == np.float32
  assert network_image.min() >= 0.0
  assert network_image.max() <= 1.0


def test_non_square_pads_centred():
  image = np.arange(1.0, 9.0).reshape(4, 2)  # Values 1..8, all above the pad value 0.
  network_image, transform = preprocess.prepare_image(image, 4)
  expected = np.zeros((4, 4), dtype=np.float32)
  expected[:, 1:3] = (image - 1.0) / 7.0
  assert transform.pad_left == 1
  np.testing.assert_allclose(network_image, expected, atol=1e-7)


def test_odd_padding_extra_goes_after():
  image = np.ones((5, 2))
  image[0, 0] = 0.0
  network_image, transform = preprocess.prepare_image(image, 5)
  assert transform.pad_left == 1
  assert network_image[:, 0].sum() == 0.0
  assert network_image[:, 3:].sum() == 0.0
  assert network_image[1, 1] == 1.0


def test_resize_label_map_keeps_values():
  rng = np.random.default_rng(5)
  label_map = rng.choice(np.array([2, 6], dtype=np.int32), size=(53, 71))
  label_map[rng.random((53, 71)) < 0.3] = 0
  transform = SquareTransform(53, 71, 32)
  resized = preprocess.resize_label_map(label_map, transform)
  assert resized.dtype == np.int32
  assert set(np.unique(resized).tolist()) == {0, 2, 6}


def test_resize_label_map_nearest_oracle():
  rng = np.random.default_rng(6)
  label_map = rng.integers(0, 5, size=(23, 31)).astype(np.uint8)
  transform = SquareTransform(23, 31, 40)
  resized = preprocess.resize_label_map(label_map, transform)
  expected = np.zeros((40, 40), dtype=np.uint8)
  for i in range(40):
    for j in range(40):
      x, y = transform.from_network(np.array([float(j), float(i)]))
      col, row = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
      if 0 <= row < 23 and 0 <= col < 31:
        expected[i, j] = label_map[row, col]
  assert np.array_equal(resized, expected)


def test_resize_masks_identity_at_same_size():
  masks = np.random.default_rng(7).random((2, 12, 12)) < 0.5
  resized = preprocess.resize_masks(masks, SquareTransform(12, 12, 12))
  assert resized.dtype == np.uint8
  assert np.array_equal(resized, masks.astype(np.uint8))


def test_resize_masks_padding_zero():
  masks = np.ones((1, 10, 4), dtype=bool)
  resized = preprocess.resize_masks(masks, SquareTransform(10, 4, 10))
  assert resized[0, :, :3].sum() == 0
  assert resized[0, :, 7:].sum() == 0
  assert resized[0, :, 3:7].min() == 1


def test_resize_masks_shape_mismatch_raises():
  with pytest.raises(ValueError, match=r"\[O, 10, 4\]"):
    preprocess.resize_masks(np.ones((1, 4, 10), dtype=bool), SquareTransform(10, 4, 10))
