"""Tests for the masked Chamfer distance and loss."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mask_hybridgnet_jax.losses import chamfer
from mask_hybridgnet_jax.topology import GraphTemplate


@functools.partial(jax.jit, static_argnames="chunk_size")
def distance_and_grad(pred, gt, length, chunk_size=None):
  """Chamfer distance and its gradient with respect to `pred`, jitted."""
  return jax.value_and_grad(chamfer.chamfer_distance)(
      pred, gt, length, chunk_size=chunk_size)


# Two organs with 8 and 4 nodes.
TEMPLATE = GraphTemplate(("left", "right"), (1, 2), (8, 4), num_levels=1)
# Two organs with 8 nodes each at level 0 and 4 at level 1.
TWO_LEVEL_TEMPLATE = GraphTemplate(("left", "right"), (1, 2), (8, 8), num_levels=2)


@functools.partial(jax.jit, static_argnames=("template", "level"))
def loss_and_grad(positions, batch, template=TEMPLATE, level=0):
  """Chamfer loss and its gradient with respect to `positions`."""
  return jax.value_and_grad(chamfer.chamfer_loss)(positions, batch, template, level)


def brute_force_chamfer(pred: np.ndarray, gt: np.ndarray) -> float:
  """Chamfer distance in float64 numpy, from an explicit double loop."""
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  if len(gt) == 0:
    return 0.0
  d2 = np.array([[np.sum((p - g) ** 2) for g in gt] for p in pred])
  return float(d2.min(axis=1).mean() + d2.min(axis=0).mean())


def random_points(seed: int, count: int, scale: float = 1.0) -> np.ndarray:
  return (np.random.default_rng(seed).uniform(0.0, 1.0, (count, 2)) * scale).astype(
      np.float32)


def pad_rows(points: np.ndarray, extra: int, fill: float) -> np.ndarray:
  padding = np.full((extra, 2), fill, np.float32)
  return np.concatenate([points, padding], axis=0)


def test_golden_value():
  pred = jnp.array([[0.0, 0.0]])
  gt = jnp.array([[0.0, 0.0], [3.0, 4.0]])
  assert float(chamfer.chamfer_distance(pred, gt, 2)) == 12.5


def test_matches_brute_force_with_padding():
  pred = random_points(0, 13)
  gt = random_points(1, 21)
  padded = pad_rows(gt, 11, 0.0)
  value, _ = distance_and_grad(jnp.asarray(pred), jnp.asarray(padded), 21)
  np.testing.assert_allclose(float(value), brute_force_chamfer(pred, gt), rtol=1e-5)


@pytest.mark.parametrize("num_points", [255, 256, 257, 1025])
def test_chunked_matches_brute_force(num_points):
  pred = random_points(2, 20)
  gt = random_points(3, num_points)
  value, _ = distance_and_grad(
      jnp.asarray(pred), jnp.asarray(gt), num_points, chunk_size=256)
  np.testing.assert_allclose(float(value), brute_force_chamfer(pred, gt), rtol=1e-5)


@pytest.mark.parametrize("num_points", [255, 256, 257, 1025])
def test_chunked_equals_unchunked(num_points):
  pred = jnp.asarray(random_points(4, 20))
  # Real length 7 short of the padded size, so the last chunk mixes real
  # rows, padding and the rows that complete the chunk.
  gt = jnp.asarray(pad_rows(random_points(5, num_points - 7), 7, np.nan))
  length = num_points - 7

  unchunked, grad_unchunked = distance_and_grad(pred, gt, length)
  chunked, grad_chunked = distance_and_grad(pred, gt, length, chunk_size=256)
  np.testing.assert_allclose(float(chunked), float(unchunked), rtol=1e-6)
  np.testing.assert_allclose(grad_chunked, grad_unchunked, rtol=1e-5, atol=1e-9)


def brute_force_chamfer_gradient(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """Gradient of the Chamfer distance with respect to `pred`, in float64 numpy.

  Each minimum passes its derivative to the minimising pair only.
  """
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  diff = pred[:, None, :] - gt[None, :, :]  # [N, P, 2]
  d2 = np.sum(diff**2, axis=-1)
  grad = np.zeros_like(pred)
  nearest_gt = d2.argmin(axis=1)
  for i, j in enumerate(nearest_gt):
    grad[i] += 2 * (pred[i] - gt[j]) / len(pred)
  nearest_pred = d2.argmin(axis=0)
  for j, i in enumerate(nearest_pred):
    grad[i] += 2 * (pred[i] - gt[j]) / len(gt)
  return grad


@pytest.mark.parametrize("num_points", [255, 256, 257, 1025])
def test_chunked_gradient_matches_brute_force(num_points):
  pred = random_points(6, 20)
  gt = random_points(7, num_points)
  _, grad = distance_and_grad(jnp.asarray(pred), jnp.asarray(gt), num_points, chunk_size=256)
  np.testing.assert_allclose(grad, brute_force_chamfer_gradient(pred, gt), rtol=1e-4, atol=1e-7)


def test_chunked_gradient_memory_below_one_distance_matrix():
  num_nodes, num_points = 352, 16384
  pred = jax.ShapeDtypeStruct((num_nodes, 2), jnp.float32)
  gt = jax.ShapeDtypeStruct((num_points, 2), jnp.float32)
  compiled = distance_and_grad.lower(pred, gt, 0, chunk_size=1024).compile()
  memory = compiled.memory_analysis()
  if memory is None:
    pytest.skip("this backend reports no memory analysis")
  # One float32 [N, P] distance matrix is 22 MiB; the chunked version keeps
  # [N, 1024] chunks and O(N + P) arrays.
  assert memory.temp_size_in_bytes < num_nodes * num_points * 4 / 4


@pytest.mark.parametrize("fill", [0.0, 1e6, np.nan])
@pytest.mark.parametrize("extra", [4, 8, 64])
def test_padding_never_changes_loss(fill, extra):
  pred = jnp.asarray(random_points(6, 16))
  gt = random_points(7, 30)
  reference, reference_grad = distance_and_grad(pred, jnp.asarray(gt), 30)
  padded = jnp.asarray(pad_rows(gt, extra, fill))
  value, grad = distance_and_grad(pred, padded, 30)
  np.testing.assert_allclose(float(value), float(reference), rtol=1e-6)
  np.testing.assert_allclose(grad, reference_grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("fill", [0.0, 1e6, np.nan])
def test_chunked_padding_never_changes_loss(fill):
  pred = jnp.asarray(random_points(8, 16))
  gt = random_points(9, 30)
  reference, _ = distance_and_grad(pred, jnp.asarray(gt), 30)
  padded = jnp.asarray(pad_rows(gt, 64, fill))
  value, grad = distance_and_grad(pred, padded, 30, chunk_size=8)
  np.testing.assert_allclose(float(value), float(reference), rtol=1e-6)
  assert bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.parametrize("scale", [1.0, 512.0])
def test_set_against_itself_is_zero(scale):
  points = jnp.asarray(random_points(10, 40, scale))
  value, grad = distance_and_grad(points, points, 40)
  assert float(value) == 0.0
  assert bool(jnp.all(jnp.isfinite(grad)))


def test_empty_set_gives_zero_and_zero_gradient():
  pred = jnp.asarray(random_points(11, 8))
  gt = jnp.full((16, 2), jnp.nan)
  value, grad = distance_and_grad(pred, gt, 0)
  assert float(value) == 0.0
  assert bool(jnp.all(grad == 0.0))


def test_empty_set_chunked_gives_zero_gradient():
  pred = jnp.asarray(random_points(12, 8))
  gt = jnp.full((16, 2), 1e6)
  value, grad = distance_and_grad(pred, gt, 0, chunk_size=5)
  assert float(value) == 0.0
  assert bool(jnp.all(grad == 0.0))


def test_gradient_matches_hand_value():
  # One node at (1, 0) and targets (0, 0), (3, 0): pred-to-gt gives
  # |p - (0,0)|^2, gt-to-pred gives (|p - (0,0)|^2 + |p - (3,0)|^2) / 2, so
  # d/dx = 2x + (2x + 2 (x - 3)) / 2 = 2 + (2 - 4) / 2 = 1 at x = 1.
  pred = jnp.array([[1.0, 0.0]])
  gt = jnp.array([[0.0, 0.0], [3.0, 0.0]])
  _, grad = distance_and_grad(pred, gt, 2)
  np.testing.assert_allclose(np.asarray(grad), [[1.0, 0.0]], atol=1e-6)


def make_batch(seed: int, num_points: int = 24):
  """Two images, two organs; the right organ is absent from image 1."""
  rng = np.random.default_rng(seed)
  points = rng.uniform(0.2, 0.8, (2, 2, num_points, 2)).astype(np.float32)
  lengths = np.array([[20, 15], [18, 0]], np.int32)
  present = np.array([[True, True], [True, False]])
  # Padding and the absent organ hold garbage that must never matter.
  for b in range(2):
    for o in range(2):
      points[b, o, lengths[b, o]:] = np.nan
  return {
      "points": points,
      "lengths": lengths,
      "present": present,
      "valid": np.array([True, True]),
  }


def test_loss_with_absent_organ_matches_oracle():
  batch = make_batch(13)
  positions = np.random.default_rng(14).uniform(0.2, 0.8, (2, 12, 2)).astype(np.float32)
  loss, _ = loss_and_grad(jnp.asarray(positions), batch)
  image0 = (brute_force_chamfer(positions[0, :8], batch["points"][0, 0, :20])
            + brute_force_chamfer(positions[0, 8:], batch["points"][0, 1, :15]))
  image1 = brute_force_chamfer(positions[1, :8], batch["points"][1, 0, :18])
  np.testing.assert_allclose(float(loss), (image0 + image1) / 2, rtol=1e-5)


def test_loss_with_absent_organ_has_finite_gradient():
  batch = make_batch(15)
  positions = jnp.asarray(
      np.random.default_rng(16).uniform(0.2, 0.8, (2, 12, 2)).astype(np.float32))
  loss, grad = loss_and_grad(positions, batch)
  assert bool(jnp.isfinite(loss))
  assert bool(jnp.all(jnp.isfinite(grad)))
  # Nodes of the absent organ get no gradient at all.
  assert bool(jnp.all(grad[1, 8:] == 0.0))


def test_absent_flag_overrides_length():
  batch = make_batch(17)
  positions = jnp.asarray(
      np.random.default_rng(18).uniform(0.2, 0.8, (2, 12, 2)).astype(np.float32))
  reference, _ = loss_and_grad(positions, batch)
  batch["lengths"] = batch["lengths"].copy()
  batch["lengths"][1, 1] = 10  # length set, but the organ is flagged absent
  loss, _ = loss_and_grad(positions, batch)
  assert float(loss) == float(reference)


def test_invalid_image_is_left_out():
  batch = make_batch(19)
  positions = np.random.default_rng(20).uniform(0.2, 0.8, (2, 12, 2)).astype(np.float32)
  positions[1] = np.nan
  batch["valid"] = np.array([True, False])
  loss, _ = loss_and_grad(jnp.asarray(positions), batch)
  expected = (brute_force_chamfer(positions[0, :8], batch["points"][0, 0, :20])
              + brute_force_chamfer(positions[0, 8:], batch["points"][0, 1, :15]))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_loss_at_coarser_level_uses_level_slices():
  batch = make_batch(21)
  positions = np.random.default_rng(22).uniform(0.2, 0.8, (2, 8, 2)).astype(np.float32)
  loss, _ = loss_and_grad(
      jnp.asarray(positions), batch, template=TWO_LEVEL_TEMPLATE, level=1)
  image0 = (brute_force_chamfer(positions[0, :4], batch["points"][0, 0, :20])
            + brute_force_chamfer(positions[0, 4:], batch["points"][0, 1, :15]))
  image1 = brute_force_chamfer(positions[1, :4], batch["points"][1, 0, :18])
  np.testing.assert_allclose(float(loss), (image0 + image1) / 2, rtol=1e-5)


def test_organ_count_mismatch_raises():
  batch = make_batch(23)
  batch["points"] = batch["points"][:, :1]
  with pytest.raises(ValueError, match="1 organs but the graph template has 2"):
    chamfer.chamfer_loss(jnp.zeros((2, 12, 2)), batch, TEMPLATE, 0)


def test_check_lengths_accepts_valid_lengths():
  chamfer.check_lengths(np.array([[0, 128], [5, 7]]), 128, ["a", "b"], ["heart", "lung"])


def test_check_lengths_names_example_and_organ():
  lengths = np.array([[10, 12], [130, 7]])
  with pytest.raises(ValueError, match=r"example 'case_7': organ 'heart' has 130"):
    chamfer.check_lengths(lengths, 128, ["case_3", b"case_7"], ["heart", "lung"])


def test_check_lengths_rejects_negative_length():
  with pytest.raises(ValueError, match=r"organ 'lung' has -1"):
    chamfer.check_lengths(np.array([[1, -1]]), 128, ["a"], ["heart", "lung"])


def test_check_lengths_rejects_wrong_shape():
  with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
    chamfer.check_lengths(np.array([1, 2]), 128, ["a", "b"], ["heart", "lung"])


def test_rejects_non_positive_chunk_size():
  with pytest.raises(ValueError, match="chunk_size = 0"):
    chamfer.chamfer_distance(jnp.zeros((2, 2)), jnp.zeros((4, 2)), 4, chunk_size=0)
