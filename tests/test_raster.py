"""Tests for the soft polygon rasteriser and the Dice and BCE losses."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mask_hybridgnet_jax.losses import raster
from mask_hybridgnet_jax.topology import GraphTemplate


@functools.partial(jax.jit, static_argnames=("height", "width", "tau", "chunk_size"))
def rasterize(polygon, height=64, width=64, tau=0.1, chunk_size=16):
  return raster.soft_rasterize(polygon, height, width, tau, chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("height", "width", "tau"))
def rasterize_dense(polygon, height=64, width=64, tau=0.1):
  return raster.soft_rasterize_dense(polygon, height, width, tau)


@functools.partial(jax.jit, static_argnames=("height", "width", "tau", "dense"))
def weighted_sum_and_grad(polygon, weights, height=64, width=64, tau=1.0, dense=False):
  """A scalar function of the mask (sum of mask * weights) and its gradient."""
  function = raster.soft_rasterize_dense if dense else raster.soft_rasterize
  return jax.value_and_grad(
      lambda p: jnp.sum(function(p, height, width, tau) * weights))(polygon)


def even_odd_oracle(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
  """Inside flags from the winding number's parity, summed from angles in float64.

  The parity of the winding number equals the parity of ray crossings, so this
  is the even-odd rule computed without casting rays.
  """
  polygon = np.asarray(polygon, np.float64)
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  total = np.zeros((height, width))
  for i in range(len(polygon)):
    a = polygon[i]
    b = polygon[(i + 1) % len(polygon)]
    step = np.arctan2(b[1] - y, b[0] - x) - np.arctan2(a[1] - y, a[0] - x)
    total += (step + np.pi) % (2 * np.pi) - np.pi
  winding = np.rint(total / (2 * np.pi)).astype(int)
  return winding % 2 == 1


def random_star(seed: int, num_vertices: int, centre: float = 32.0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  angles = np.sort(rng.uniform(0.0, 2 * np.pi, num_vertices))
  radii = rng.uniform(8.0, 28.0, num_vertices)
  return np.stack([centre + radii * np.cos(angles), centre + radii * np.sin(angles)],
                  axis=1).astype(np.float32)


# Vertices on half-integers, so no pixel centre lies on an edge.
HALF_SQUARE = np.array([[16.5, 16.5], [47.5, 16.5], [47.5, 47.5], [16.5, 47.5]], np.float32)
SQUARE = np.array([[16, 16], [48, 16], [48, 48], [16, 48]], np.float32)


def test_validate_tau_accepts_reference_value():
  assert raster.validate_tau(0.1) == 0.1


@pytest.mark.parametrize("tau", [1e-6, 0.0, -1.0, 11.0, float("nan"), float("inf")])
def test_validate_tau_rejects_out_of_range(tau):
  with pytest.raises(raster.InvalidTauError, match="outside the supported range"):
    raster.validate_tau(tau)


@pytest.mark.parametrize("tau", [True, "0.1", None])
def test_validate_tau_rejects_non_numbers(tau):
  with pytest.raises(raster.InvalidTauError, match="expected a number"):
    raster.validate_tau(tau)


def test_soft_rasterize_rejects_tiny_tau():
  with pytest.raises(raster.InvalidTauError, match=r"1e-06 px\^2 is outside"):
    raster.soft_rasterize(jnp.asarray(SQUARE), 8, 8, 1e-6)


def test_square_hard_threshold_matches_oracle():
  mask = rasterize(jnp.asarray(HALF_SQUARE))
  np.testing.assert_array_equal(np.asarray(mask) > 0.5, even_odd_oracle(HALF_SQUARE, 64, 64))


def test_square_hard_threshold_pixel_count():
  mask = rasterize(jnp.asarray(HALF_SQUARE))
  assert int(jnp.sum(mask > 0.5)) == 31 * 31


def test_star_hard_threshold_matches_oracle():
  star = random_star(0, 40)
  mask = rasterize(jnp.asarray(star))
  np.testing.assert_array_equal(np.asarray(mask) > 0.5, even_odd_oracle(star, 64, 64))


def test_pentagram_follows_even_odd_rule():
  angles = np.deg2rad(90.0 + 144.0 * np.arange(5))
  pentagram = np.stack([32.3 + 25 * np.cos(angles), 32.3 + 25 * np.sin(angles)],
                       axis=1).astype(np.float32)
  mask = np.asarray(rasterize(jnp.asarray(pentagram))) > 0.5
  # The centre has winding number 2, so even-odd leaves it outside.
  assert not mask[32, 32]
  np.testing.assert_array_equal(mask, even_odd_oracle(pentagram, 64, 64))


def test_output_in_unit_interval():
  mask = rasterize(jnp.asarray(random_star(1, 30)))
  assert float(jnp.min(mask)) >= 0.0
  assert float(jnp.max(mask)) <= 1.0


def test_duplicate_vertex_square_equals_square():
  with_duplicate = np.array([[16, 16], [16, 16], [48, 16], [48, 48], [16, 48]], np.float32)
  np.testing.assert_allclose(
      np.asarray(rasterize(jnp.asarray(with_duplicate))),
      np.asarray(rasterize(jnp.asarray(SQUARE))), atol=1e-6)


def test_clockwise_equals_counter_clockwise():
  star = jnp.asarray(random_star(2, 40))
  np.testing.assert_array_equal(np.asarray(rasterize(star)), np.asarray(rasterize(star[::-1])))


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 64])
def test_chunked_matches_dense(chunk_size):
  star = jnp.asarray(random_star(3, 40))
  np.testing.assert_allclose(
      np.asarray(rasterize(star, chunk_size=chunk_size)),
      np.asarray(rasterize_dense(star)), atol=1e-6)


def nearest_segment_oracle(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
  """Return each pixel's nearest segment, by brute force in float64 with ties to the lowest index."""
  polygon = np.asarray(polygon, np.float64)
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  a, b = polygon[:, None, None, :], np.roll(polygon, -1, axis=0)[:, None, None, :]
  d = b - a
  t = np.clip(((x - a[..., 0]) * d[..., 0] + (y - a[..., 1]) * d[..., 1])
              / np.maximum(np.sum(d * d, axis=-1), 1e-12), 0.0, 1.0)
  distances = np.hypot(a[..., 0] + t * d[..., 0] - x, a[..., 1] + t * d[..., 1] - y)
  return np.argmin(distances, axis=0)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 40])
def test_nearest_segments_match_brute_force(chunk_size):
  star = random_star(6, 37)
  index, inside = raster.nearest_segments(jnp.asarray(star), 64, 64, chunk_size=chunk_size)
  expected = nearest_segment_oracle(star, 64, 64)
  # Float32 and float64 may order two almost equidistant segments differently.
  assert np.mean(np.asarray(index) == expected) > 0.999
  np.testing.assert_array_equal(np.asarray(inside), even_odd_oracle(star, 64, 64))


def test_nearest_segment_tie_lowest_index():
  # Pixel centre (2, 2) lies 2 px from the segments 0 (y = 0) and 3 (x = 0),
  # and 3 px from the others: segment 0 must win, in any chunking.
  square = jnp.asarray([[0, 0], [5, 0], [5, 5], [0, 5]], jnp.float32)
  for chunk_size in (1, 2, 3, 4):
    index, _ = raster.nearest_segments(square, 8, 8, chunk_size=chunk_size)
    assert int(index[2, 2]) == 0


def test_chunked_gradient_matches_dense():
  star = jnp.asarray(random_star(4, 24))
  weights = jnp.asarray(np.random.default_rng(5).uniform(size=(64, 64)).astype(np.float32))
  value, grad = weighted_sum_and_grad(star, weights)
  dense_value, dense_grad = weighted_sum_and_grad(star, weights, dense=True)
  np.testing.assert_allclose(float(value), float(dense_value), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(dense_grad), rtol=1e-4, atol=1e-4)


def test_gradient_matches_central_differences():
  rng = np.random.default_rng(6)
  angles = np.linspace(0.0, 2 * np.pi, 6, endpoint=False)
  hexagon = np.stack([12.2 + 7 * np.cos(angles), 11.7 + 6 * np.sin(angles)], axis=1)
  hexagon += rng.uniform(-0.5, 0.5, hexagon.shape)
  weights = rng.uniform(size=(24, 24))
  with jax.enable_x64(True):
    polygon = jnp.asarray(hexagon, jnp.float64)
    pixel_weights = jnp.asarray(weights, jnp.float64)
    function = jax.jit(
        lambda p: jnp.sum(raster.soft_rasterize(p, 24, 24, 2.0, chunk_size=4) * pixel_weights))
    grad = np.asarray(jax.jit(jax.grad(function))(polygon))
    step = 1e-6
    numeric = np.zeros_like(hexagon)
    for index in np.ndindex(*hexagon.shape):
      offset = np.zeros_like(hexagon)
      offset[index] = step
      numeric[index] = (float(function(polygon + offset))
                        - float(function(polygon - offset))) / (2 * step)
  np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name, polygon", [
    ("duplicate vertices", [[16, 16], [16, 16], [48, 16], [48, 16], [48, 48], [16, 48]]),
    ("all at one point", [[20, 20]] * 6),
    ("outside the image", [[-50, 10], [-50, 40], [-10, 40], [30, 10]]),
])
def test_degenerate_polygons_have_finite_gradient(name, polygon):
  polygon = jnp.asarray(polygon, jnp.float32)
  weights = jnp.asarray(np.random.default_rng(7).uniform(size=(64, 64)).astype(np.float32))
  with jax.debug_nans(True):
    value, grad = weighted_sum_and_grad(polygon, weights, tau=0.1)
  assert bool(jnp.isfinite(value)), name
  assert bool(jnp.all(jnp.isfinite(grad))), name


def test_collapsed_polygon_is_outside_everywhere():
  mask = rasterize(jnp.full((6, 2), 20.0))
  assert float(jnp.max(mask)) <= 0.5


def compiled_temp_bytes(function, num_vertices: int, size: int) -> int:
  polygon = jnp.zeros((num_vertices, 2), jnp.float32)
  gradient = jax.jit(jax.grad(lambda p: jnp.sum(function(p, size, size))))
  return gradient.lower(polygon).compile().memory_analysis().temp_size_in_bytes


def test_peak_memory_does_not_grow_with_vertices():
  small = compiled_temp_bytes(raster.soft_rasterize, 64, 128)
  large = compiled_temp_bytes(raster.soft_rasterize, 512, 128)
  # Measured on XLA:CPU with jax 0.10.2: 1.34 MiB and 1.35 MiB.
  assert large <= 1.1 * small


def test_peak_memory_is_a_few_images():
  # 32 float32 images of 128 x 128 are 2 MiB; measured 1.35 MiB.
  assert compiled_temp_bytes(raster.soft_rasterize, 512, 128) <= 32 * 128 * 128 * 4


def test_dense_memory_grows_with_vertices():
  small = compiled_temp_bytes(raster.soft_rasterize_dense, 64, 128)
  large = compiled_temp_bytes(raster.soft_rasterize_dense, 512, 128)
  # Measured: 44 MiB and 352 MiB.
  assert large >= 4 * small


def test_dice_loss_hand_values():
  target = jnp.zeros((4, 4)).at[:2].set(1.0)
  soft = jnp.zeros((4, 4)).at[:1].set(1.0)
  # 2 * 4 / (4 + 8 + 1e-6)
  np.testing.assert_allclose(float(raster.dice_loss(soft, target)), 1 - 8 / 12, rtol=1e-6)


def test_dice_loss_of_perfect_mask_is_near_zero():
  target = jnp.zeros((4, 4)).at[:2].set(1.0)
  assert abs(float(raster.dice_loss(target, target))) < 1e-6


def test_bce_loss_at_half():
  target = jnp.zeros((4, 4)).at[:2].set(1.0)
  soft = jnp.full((4, 4), 0.5)
  np.testing.assert_allclose(float(raster.bce_loss(soft, target)), np.log(2.0), rtol=1e-6)


def test_bce_loss_clips_saturated_pixels():
  target = jnp.ones((2, 2))
  value, grad = jax.value_and_grad(raster.bce_loss)(jnp.zeros((2, 2)), target)
  np.testing.assert_allclose(float(value), -np.log(np.finfo(np.float32).tiny), rtol=1e-6)
  assert bool(jnp.all(jnp.isfinite(grad)))


# Two organs with 8 nodes each.
TEMPLATE = GraphTemplate(("left", "right"), (1, 2), (8, 8), num_levels=1)


def octagon(centre_x: float, centre_y: float, radius: float) -> np.ndarray:
  angles = np.linspace(0.0, 2 * np.pi, 8, endpoint=False) + 0.1
  return np.stack([centre_x + radius * np.cos(angles), centre_y + radius * np.sin(angles)],
                  axis=1)


def raster_batch():
  """Two 32 x 32 images; the right organ is absent from image 1.

  Targets are the hard masks of the same octagons, in pixels.
  """
  size = 32
  polygons = [[octagon(10.3, 15.2, 6.0), octagon(22.4, 15.7, 5.0)],
              [octagon(11.1, 14.6, 7.0), octagon(20.0, 20.0, 5.0)]]
  masks = np.zeros((2, 2, size, size), np.float32)
  positions = np.zeros((2, 16, 2), np.float32)
  for b in range(2):
    for o in range(2):
      masks[b, o] = even_odd_oracle(polygons[b][o], size, size)
      positions[b, 8 * o:8 * o + 8] = polygons[b][o] / size
  masks[1, 1] = 0.0
  present = np.array([[True, True], [True, False]])
  return positions, {"masks": masks, "present": present, "valid": np.array([True, True])}


@jax.jit
def raster_losses_and_grad(positions, batch):
  def total(p):
    losses = raster.raster_losses(p, batch, TEMPLATE, 0.1)
    return losses["dice"] + losses["bce"], losses
  return jax.value_and_grad(total, has_aux=True)(positions)


def oracle_raster_losses(positions, batch):
  """Dice and BCE per organ present from single-polygon rasterisation, numpy means."""
  size = batch["masks"].shape[-1]
  per_image_dice = []
  per_image_bce = []
  for b in range(2):
    dice = bce = 0.0
    for o, organ_slice in enumerate(TEMPLATE.organ_slices(0)):
      if not batch["present"][b, o]:
        continue
      soft = rasterize(jnp.asarray(positions[b, organ_slice] * size), height=size,
                       width=size)
      target = jnp.asarray(batch["masks"][b, o])
      dice += float(raster.dice_loss(soft, target))
      bce += float(raster.bce_loss(soft, target))
    per_image_dice.append(dice)
    per_image_bce.append(bce)
  return np.mean(per_image_dice), np.mean(per_image_bce)


def test_raster_losses_match_per_organ_oracle():
  positions, batch = raster_batch()
  (_, losses), _ = raster_losses_and_grad(jnp.asarray(positions), batch)
  dice, bce = oracle_raster_losses(positions, batch)
  np.testing.assert_allclose(float(losses["dice"]), dice, rtol=1e-5)
  np.testing.assert_allclose(float(losses["bce"]), bce, rtol=1e-5)


def test_raster_losses_grow_when_contours_move_away():
  positions, batch = raster_batch()
  (_, matching), _ = raster_losses_and_grad(jnp.asarray(positions), batch)
  shifted = positions + 2.0 / batch["masks"].shape[-1]  # 2 px right and down
  (_, moved), _ = raster_losses_and_grad(jnp.asarray(shifted), batch)
  assert float(moved["dice"]) > float(matching["dice"]) + 0.1
  assert float(moved["bce"]) > float(matching["bce"])


def test_raster_losses_absent_organ_gets_zero_gradient():
  positions, batch = raster_batch()
  (total, _), grad = raster_losses_and_grad(jnp.asarray(positions), batch)
  assert bool(jnp.isfinite(total))
  assert bool(jnp.all(jnp.isfinite(grad)))
  assert bool(jnp.all(grad[1, 8:] == 0.0))


def test_raster_losses_leave_out_invalid_image():
  positions, batch = raster_batch()
  batch["valid"] = np.array([True, False])
  (_, losses), _ = raster_losses_and_grad(jnp.asarray(positions), batch)
  size = batch["masks"].shape[-1]
  expected = 0.0
  for o, organ_slice in enumerate(TEMPLATE.organ_slices(0)):
    soft = rasterize(jnp.asarray(positions[0, organ_slice] * size), height=size, width=size)
    expected += float(raster.dice_loss(soft, jnp.asarray(batch["masks"][0, o])))
  np.testing.assert_allclose(float(losses["dice"]), expected, rtol=1e-5)


def test_raster_loss_is_dice_plus_bce():
  positions, batch = raster_batch()
  (_, losses), _ = raster_losses_and_grad(jnp.asarray(positions), batch)
  value = raster.raster_loss(jnp.asarray(positions), batch, TEMPLATE, 0.1)
  np.testing.assert_allclose(float(value), float(losses["dice"] + losses["bce"]), rtol=1e-6)


def test_raster_losses_reject_non_square_masks():
  positions, batch = raster_batch()
  batch["masks"] = batch["masks"][..., :30]
  with pytest.raises(ValueError, match="must be square"):
    raster.raster_losses(jnp.asarray(positions), batch, TEMPLATE, 0.1)


def test_soft_rasterize_rejects_empty_polygon():
  with pytest.raises(ValueError, match=r"expected \[N, 2\] with N >= 1"):
    raster.soft_rasterize(jnp.zeros((0, 2)), 8, 8)
