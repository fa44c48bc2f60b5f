"""Tests for augment.py: geometry against numpy oracles, bounds, flips, tracing."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mask_hybridgnet_jax import augment

SIZE = 48
BUDGET = 96


def disk_mask(size: int, centre_xy: tuple[float, float], radius: float) -> np.ndarray:
  """Return bool [S, S]: pixels whose centre lies within `radius` of the centre."""
  rows, cols = np.mgrid[0:size, 0:size]
  return (cols - centre_xy[0]) ** 2 + (rows - centre_xy[1]) ** 2 <= radius ** 2


def boundary_pixels(mask: np.ndarray) -> np.ndarray:
  """Return float [K, 2] (x, y) of mask pixels with a 4-neighbour outside the mask."""
  padded = np.pad(mask, 1)
  interior = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
  rows, cols = np.nonzero(mask & ~interior)
  return np.stack([cols, rows], axis=-1).astype(np.float64)


def make_example(disks, size=SIZE, budget=BUDGET, seed=0):
  """Build one padded example with one organ per (centre_xy, radius) disk."""
  rng = np.random.default_rng(seed)
  masks = np.stack([disk_mask(size, c, r) for c, r in disks]).astype(np.float32)
  points = np.zeros((len(disks), budget, 2), np.float32)
  lengths = np.zeros(len(disks), np.int32)
  for organ, mask in enumerate(masks):
    contour = boundary_pixels(mask > 0)
    assert len(contour) <= budget
    points[organ, :len(contour)] = contour / size
    lengths[organ] = len(contour)
  image = (0.2 + 0.6 * masks.max(axis=0) + 0.1 * rng.random((size, size))).astype(np.float32)
  return {
      "image": image[:, :, None],
      "masks": masks,
      "points": points,
      "lengths": lengths,
      "present": lengths > 0,
  }


def stack(examples):
  batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
  batch["valid"] = np.ones(len(examples), bool)
  return batch


def repeat(example, count):
  batch = {k: np.repeat(v[None], count, axis=0) for k, v in example.items()}
  batch["valid"] = np.ones(count, bool)
  return batch


def valid_points(points, lengths):
  """Return a list over organs of the first `lengths` rows of `points`."""
  return [np.asarray(points[o, :int(lengths[o])]) for o in range(len(lengths))]


def signed_area(points: np.ndarray) -> float:
  x, y = points[:, 0], points[:, 1]
  return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def rotation_scale(angle_deg, scale_x, scale_y):
  angle = math.radians(angle_deg)
  rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
  return (rotation @ np.diag([scale_x, scale_y])).astype(np.float32)


def make_augment(config, **flags):
  return jax.jit(functools.partial(augment.augment_batch, config=config, **flags))


@functools.lru_cache(maxsize=None)
def default_augment(horizontal=False, vertical=False, transpose=False):
  """Return a jitted augment_batch with the default config, shared across tests."""
  return make_augment(
      augment.default_augment_config(),
      allow_horizontal_flip=horizontal, allow_vertical_flip=vertical,
      allow_transpose=transpose)


NO_FLIPS = dict(allow_horizontal_flip=False, allow_vertical_flip=False, allow_transpose=False)
TWO_ORGANS = make_example([((22, 25), 9), ((34, 12), 5)])
# Two disks side by side, like left and right lungs.
TWO_LUNGS = make_example([((14, 24), 7), ((34, 24), 7)])


def test_default_config_values():
  config = augment.default_augment_config()
  assert (config.scale_min, config.scale_max) == (0.7, 1.2)
  assert config.rotation_std_deg == 15.0
  assert (config.gamma_min, config.gamma_max) == (0.6, 1.2)
  assert config.noise_std == 1.0 / 128.0
  assert config.enabled


def test_disabled_returns_batch_unchanged():
  config = augment.default_augment_config()
  config.enabled = False
  batch = stack([make_example([((20, 24), 8)], seed=s) for s in range(2)])
  out = augment.augment_batch(jax.random.key(0), batch, config, **NO_FLIPS)
  for key, value in batch.items():
    np.testing.assert_array_equal(np.asarray(out[key]), value, err_msg=key)


def test_identity_matrix_keeps_example():
  example = make_example([((20, 24), 8), ((30, 30), 5)])
  matrix = augment.affine_about_centre(jnp.eye(2), SIZE)
  out = augment.apply_affine(example, matrix)
  np.testing.assert_allclose(np.asarray(out["image"]), example["image"], atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out["masks"]), example["masks"])
  np.testing.assert_allclose(np.asarray(out["points"]), example["points"], atol=1e-6)


def test_quarter_turn_matches_rot90():
  example = make_example([((14, 20), 6)], seed=3)
  quarter = jnp.array([[0.0, -1.0], [1.0, 0.0]])
  out = augment.apply_affine(example, augment.affine_about_centre(quarter, SIZE))
  # x' = c - (y - c), y' = c + (x - c) about the centre c = (S - 1) / 2 pixels is
  # numpy's clockwise quarter turn out[r, k] = in[S - 1 - k, r].
  expected_image = np.rot90(example["image"][..., 0], k=-1)
  expected_masks = np.rot90(example["masks"], k=-1, axes=(1, 2))
  np.testing.assert_allclose(np.asarray(out["image"][..., 0]), expected_image, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out["masks"]), expected_masks)
  centre = (SIZE - 1) / 2
  pixels = example["points"][0, :example["lengths"][0]] * SIZE
  expected_points = np.stack(
      [centre - (pixels[:, 1] - centre), centre + (pixels[:, 0] - centre)], axis=-1)
  got_points = np.asarray(out["points"][0, :example["lengths"][0]]) * SIZE
  np.testing.assert_allclose(got_points, expected_points, atol=1e-4)


def test_shifted_matrix_moves_points_by_translation():
  example = make_example([((20, 24), 6)])
  matrix = jnp.array([[1.0, 0.0, 3.0 / SIZE], [0.0, 1.0, -2.0 / SIZE]])
  out = augment.apply_affine(example, matrix)
  # A whole-pixel shift resamples exactly: the mask moves 3 columns right, 2 rows up.
  expected_mask = np.zeros_like(example["masks"][0])
  expected_mask[:-2, 3:] = example["masks"][0, 2:, :-3]
  np.testing.assert_array_equal(np.asarray(out["masks"][0]), expected_mask)
  shift = np.array([3.0, -2.0]) / SIZE
  np.testing.assert_allclose(
      np.asarray(out["points"][0]), example["points"][0] + shift, atol=1e-6)


@pytest.mark.parametrize("angle_deg, scale_x, scale_y", [(30.0, 1.2, 0.8), (-20.0, 0.7, 1.1)])
def test_warped_mask_centroid_follows_points(angle_deg, scale_x, scale_y):
  example = make_example([((22, 25), 9)])
  linear = rotation_scale(angle_deg, scale_x, scale_y)
  out = augment.apply_affine(example, augment.affine_about_centre(jnp.asarray(linear), SIZE))
  rows, cols = np.nonzero(np.asarray(out["masks"][0]) > 0)
  mask_centroid = np.array([cols.mean(), rows.mean()])
  points = np.asarray(out["points"][0, :example["lengths"][0]]) * SIZE
  points_centroid = points.mean(axis=0)
  assert np.linalg.norm(mask_centroid - points_centroid) < 1.0


@pytest.mark.parametrize("angle_deg, scale_x, scale_y", [(30.0, 1.2, 0.8), (-20.0, 0.7, 1.1)])
def test_warped_points_lie_on_mask_boundary(angle_deg, scale_x, scale_y):
  example = make_example([((22, 25), 9)])
  linear = rotation_scale(angle_deg, scale_x, scale_y)
  out = augment.apply_affine(example, augment.affine_about_centre(jnp.asarray(linear), SIZE))
  boundary = boundary_pixels(np.asarray(out["masks"][0]) > 0)
  points = np.asarray(out["points"][0, :example["lengths"][0]], np.float64) * SIZE
  distances = np.sqrt(((points[:, None, :] - boundary[None, :, :]) ** 2).sum(-1)).min(axis=1)
  assert distances.max() <= 1.5


def test_random_augment_keeps_masks_binary():
  batch = repeat(TWO_ORGANS, 16)
  out = default_augment()(jax.random.key(1), batch)
  values = np.unique(np.asarray(out["masks"]))
  assert set(values.tolist()) <= {0.0, 1.0}


def test_random_augment_leaves_lengths_present_valid():
  batch = repeat(TWO_ORGANS, 16)
  batch["valid"][-1] = False
  out = default_augment()(jax.random.key(2), batch)
  for key in ("lengths", "present", "valid"):
    np.testing.assert_array_equal(np.asarray(out[key]), batch[key], err_msg=key)


def test_examples_get_different_draws():
  batch = repeat(TWO_ORGANS, 16)
  out = np.asarray(default_augment()(jax.random.key(3), batch)["points"])
  assert not np.allclose(out[0], out[1])


def test_points_stay_inside_near_border():
  # Two disks touching opposite borders, so almost every draw must be shrunk.
  example = make_example([((3, 4), 3), ((43, 40), 4)])
  batch = repeat(example, 200)
  augment_fn = default_augment(horizontal=True, vertical=True, transpose=True)
  out = augment_fn(jax.random.key(4), batch)
  points = np.asarray(out["points"])
  inside = [
      np.all((p >= 0.0) & (p <= 1.0))
      for b in range(200) for p in valid_points(points[b], example["lengths"])
  ]
  assert all(inside)
  moved = [not np.allclose(points[b], example["points"], atol=1e-4) for b in range(200)]
  assert sum(moved) > 100


def test_bound_needed_for_enlarging_draws():
  example = make_example([((3, 4), 3), ((43, 40), 4)])
  config = augment.default_augment_config()
  config.scale_min, config.scale_max, config.rotation_std_deg = 1.15, 1.2, 0.0
  # Without the bound every draw would push the border disks out of the image.
  centre = augment.image_centre(SIZE)
  unbounded = centre + 1.15 * (example["points"][0, :example["lengths"][0]] - centre)
  assert unbounded.min() < 0.0
  out = make_augment(config, **NO_FLIPS)(jax.random.key(5), repeat(example, 50))
  points = np.asarray(out["points"])
  lowest = min(p.min() for b in range(50) for p in valid_points(points[b], example["lengths"]))
  highest = max(p.max() for b in range(50) for p in valid_points(points[b], example["lengths"]))
  assert lowest >= 0.0
  assert highest <= (SIZE - 1) / SIZE


def test_absent_organ_does_not_bound_draw():
  # Organ 1 is absent but its (ignored) padded rows hold points at the border.
  example = make_example([((24, 24), 5), ((2, 2), 2)])
  example["present"][1] = False
  example["lengths"][1] = 0
  config = augment.default_augment_config()
  config.scale_min, config.scale_max, config.rotation_std_deg = 1.2, 1.2, 0.0
  matrix = augment.random_affine(
      jax.random.key(6), example["points"], example["lengths"], example["present"], SIZE,
      config, **NO_FLIPS)
  np.testing.assert_allclose(np.asarray(matrix[:, :2]), np.diag([1.2, 1.2]), atol=1e-6)


def test_largest_safe_blend_matches_scan():
  rng = np.random.default_rng(7)
  ts = np.linspace(0.0, 1.0, 20001)
  for trial in range(20):
    start = rng.uniform(0.05, 0.95, size=(2, 5, 2)).astype(np.float32)
    offset = rng.normal(0.0, 0.5, size=(2, 5, 2)).astype(np.float32)
    valid = rng.random((2, 5)) < 0.7
    got = float(augment.largest_safe_blend(
        jnp.asarray(start), jnp.asarray(offset), jnp.asarray(valid), 0.0, 1.0))
    moved = start[valid][None] + ts[:, None, None] * offset[valid][None]
    fits = np.all((moved >= 0.0) & (moved <= 1.0), axis=(1, 2))
    expected = ts[np.argmin(fits)] - ts[1] if not fits.all() else 1.0
    assert abs(got - expected) <= 1e-4, f"trial {trial}"


def _left_right_order(out, count):
  """Return bool [count]: organ 0's centroid lies left of organ 1's."""
  points = np.asarray(out["points"])
  lengths = np.asarray(out["lengths"])
  order = []
  for b in range(count):
    left, right = valid_points(points[b], lengths[b])
    order.append(left[:, 0].mean() < right[:, 0].mean())
  return np.array(order)


def test_left_right_kept_without_horizontal_flip():
  out = default_augment(vertical=True)(jax.random.key(8), repeat(TWO_LUNGS, 256))
  assert _left_right_order(out, 256).all()


def test_orientation_kept_without_flips():
  out = default_augment()(jax.random.key(9), repeat(TWO_LUNGS, 256))
  points = np.asarray(out["points"])
  # The disk boundary is unordered, so use three fixed rows as a triangle.
  original = signed_area(TWO_LUNGS["points"][0, [0, 10, 20]])
  signs = [np.sign(signed_area(points[b, 0, [0, 10, 20]])) for b in range(256)]
  assert all(s == np.sign(original) for s in signs)


def test_horizontal_flip_happens_when_allowed():
  out = default_augment(horizontal=True)(jax.random.key(10), repeat(TWO_LUNGS, 256))
  order = _left_right_order(out, 256)
  assert 80 < int((~order).sum()) < 176


def test_adjust_intensity_gamma_without_noise():
  config = augment.default_augment_config()
  config.gamma_min = config.gamma_max = 0.5
  config.noise_std = 0.0
  image = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8, 1)
  out = augment.adjust_intensity(jax.random.key(11), jnp.asarray(image), config)
  # The exponent is 1 / gamma, so gamma 0.5 squares the image.
  np.testing.assert_allclose(np.asarray(out), image ** 2, atol=1e-6)


def test_adjust_intensity_noise_std():
  config = augment.default_augment_config()
  config.gamma_min = config.gamma_max = 1.0
  config.noise_std = 0.1
  image = jnp.full((64, 64, 1), 0.5, jnp.float32)
  out = np.asarray(augment.adjust_intensity(jax.random.key(12), image, config))
  assert abs(out.std() - 0.1) < 0.01
  assert abs(out.mean() - 0.5) < 0.01


def test_adjust_intensity_finite_below_zero():
  config = augment.default_augment_config()
  config.noise_std = 0.0
  image = jnp.array([-1e-3, 0.0, 0.5], jnp.float32)
  out = augment.adjust_intensity(jax.random.key(13), image, config)
  assert np.all(np.isfinite(np.asarray(out)))


def test_invalid_config_raises():
  config = augment.default_augment_config()
  config.scale_min = 1.5
  batch = repeat(make_example([((22, 25), 9)]), 1)
  with pytest.raises(ValueError, match="scale_min"):
    augment.augment_batch(jax.random.key(0), batch, config, **NO_FLIPS)


def test_jit_traces_once():
  config = augment.default_augment_config()
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def augment_fn(rng, batch):
    return augment.augment_batch(rng, batch, config, **NO_FLIPS)

  for seed in range(3):
    batch = stack([make_example([((22, 25), 9)], seed=seed) for _ in range(2)])
    out = augment_fn(jax.random.key(seed), batch)
  assert out["image"].shape == (2, SIZE, SIZE, 1)
