"""Tests for the same-length, elasticity and curvature regularisers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mask_hybridgnet_jax.losses import edges
from mask_hybridgnet_jax.topology import GraphTemplate

# One organ with a 4-node ring.
RING4 = GraphTemplate(("organ",), (1,), (4,), num_levels=1)
# Two organs, 4 and 6 nodes.
TWO_ORGANS = GraphTemplate(("small", "large"), (1, 2), (4, 6), num_levels=1)


@functools.partial(jax.jit, static_argnames="template")
def losses_and_grads(positions, present, valid, template):
  """Each edge loss and its gradient with respect to `positions`."""
  results = {}
  for name in ("same_length", "elasticity", "curvature"):
    loss = lambda p, name=name: edges.edge_losses(p, template, 0, present, valid)[name]
    results[name] = jax.value_and_grad(loss)(positions)
  return results


def numpy_ring_terms(nodes: np.ndarray) -> dict[str, float]:
  """Ring terms from explicit modular indices, in float64."""
  nodes = np.asarray(nodes, np.float64)
  n = len(nodes)
  lengths = np.array([np.linalg.norm(nodes[(i + 1) % n] - nodes[i]) for i in range(n)])
  squared_lengths = lengths**2
  curvature = [
      np.sum((nodes[(i - 1) % n] - 2 * nodes[i] + nodes[(i + 1) % n]) ** 2)
      for i in range(n)
  ]
  mean_length = lengths.mean()
  return {
      "same_length": float(np.mean(((lengths - mean_length) / mean_length) ** 2)),
      "elasticity": float(squared_lengths.mean()),
      "curvature": float(np.mean(curvature)),
      "perimeter": float(lengths.sum()),
  }


def test_square_hand_values():
  square = jnp.array([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0]])
  terms = edges.ring_terms(square)
  assert float(terms["same_length"]) == 0.0
  assert float(terms["elasticity"]) == 4.0
  # (0, 2) - 2 (0, 0) + (2, 0) = (2, 2) at every corner: |.|^2 = 8.
  assert float(terms["curvature"]) == 8.0
  assert float(terms["perimeter"]) == 8.0


def test_rectangle_hand_values():
  rectangle = jnp.array([[0.0, 0.0], [4.0, 0.0], [4.0, 2.0], [0.0, 2.0]])
  terms = edges.ring_terms(rectangle)
  # Lengths 4, 2, 4, 2 around mean 3: relative deviations +-1/3.
  np.testing.assert_allclose(float(terms["same_length"]), 1.0 / 9.0, rtol=1e-6)
  np.testing.assert_allclose(float(terms["elasticity"]), 10.0, rtol=1e-6)
  # At (0, 0): (0, 2) - 2 (0, 0) + (4, 0) = (4, 2), |.|^2 = 20; same at every corner.
  np.testing.assert_allclose(float(terms["curvature"]), 20.0, rtol=1e-6)


def test_random_ring_matches_numpy():
  nodes = np.random.default_rng(0).normal(size=(11, 2)).astype(np.float32)
  terms = edges.ring_terms(jnp.asarray(nodes))
  expected = numpy_ring_terms(nodes)
  for name, value in expected.items():
    np.testing.assert_allclose(float(terms[name]), value, rtol=1e-5, err_msg=name)


def test_curvature_uses_true_second_difference_at_wrap():
  # Nodes on a line x = 0, 1, 2, 3: interior second differences vanish, so
  # the whole curvature comes from the two wrap-around nodes: at node 0,
  # x(3) - 2 x(0) + x(1) = 4, at node 3, x(2) - 2 x(3) + x(0) = -4.
  line = jnp.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
  terms = edges.ring_terms(line)
  np.testing.assert_allclose(float(terms["curvature"]), (16.0 + 16.0) / 4, rtol=1e-6)


def test_curvature_is_shift_invariant():
  nodes = jnp.asarray(np.random.default_rng(1).normal(size=(9, 2)).astype(np.float32))
  shifted = jnp.roll(nodes, 4, axis=0)
  np.testing.assert_allclose(
      float(edges.ring_terms(shifted)["curvature"]),
      float(edges.ring_terms(nodes)["curvature"]), rtol=1e-6)


def test_duplicate_vertex_has_finite_gradient():
  ring = jnp.array([[[10.0, 10.0], [10.0, 10.0], [20.0, 10.0], [20.0, 20.0]]])
  present = jnp.array([[True]])
  valid = jnp.array([True])
  with jax.debug_nans(True):
    results = losses_and_grads(ring, present, valid, RING4)
  for name, (value, grad) in results.items():
    assert bool(jnp.isfinite(value)), name
    assert bool(jnp.all(jnp.isfinite(grad))), name


def test_duplicate_vertex_same_length_value():
  ring = jnp.array([[10.0, 10.0], [10.0, 10.0], [20.0, 10.0], [20.0, 20.0]])
  lengths = np.array([0.0, 10.0, 10.0, np.hypot(10.0, 10.0)])
  mean = lengths.mean()
  expected = np.mean(((lengths - mean) / mean) ** 2)
  np.testing.assert_allclose(
      float(edges.ring_terms(ring)["same_length"]), expected, rtol=1e-5)


def test_collapsed_ring_has_zero_loss_and_finite_gradient():
  ring = jnp.full((1, 4, 2), 7.0)
  present = jnp.array([[True]])
  valid = jnp.array([True])
  with jax.debug_nans(True):
    results = losses_and_grads(ring, present, valid, RING4)
  for name, (value, grad) in results.items():
    assert float(value) == 0.0, name
    assert bool(jnp.all(jnp.isfinite(grad))), name


def test_safe_norm_at_zero():
  value, grad = jax.value_and_grad(lambda v: edges.safe_norm(v))(jnp.zeros(2))
  assert float(value) == 0.0
  assert bool(jnp.all(grad == 0.0))


def test_safe_norm_away_from_zero():
  value, grad = jax.value_and_grad(lambda v: edges.safe_norm(v))(jnp.array([3.0, 4.0]))
  assert float(value) == 5.0
  np.testing.assert_allclose(np.asarray(grad), [0.6, 0.8], rtol=1e-6)


def two_organ_batch():
  """Two images; the large organ is absent from image 1."""
  rng = np.random.default_rng(2)
  positions = rng.normal(size=(2, 10, 2)).astype(np.float32)
  positions[:, 4:] *= 3.0  # a larger second organ
  present = np.array([[True, True], [True, False]])
  valid = np.array([True, True])
  return positions, present, valid


def weighted_oracle(positions, present, valid, slices):
  """Perimeter-weighted sums over organs present, mean over valid images."""
  terms = [[numpy_ring_terms(positions[b, s]) for s in slices] for b in range(len(valid))]
  counted = present & valid[:, None]
  largest = max(terms[b][o]["perimeter"]
                for b in range(len(valid)) for o in range(len(slices)) if counted[b, o])
  result = {}
  for name in ("same_length", "elasticity", "curvature"):
    per_image = [
        sum(terms[b][o]["perimeter"] / largest * terms[b][o][name]
            for o in range(len(slices)) if counted[b, o])
        for b in range(len(valid)) if valid[b]
    ]
    result[name] = float(np.mean(per_image))
  return result


def test_weighted_losses_match_oracle():
  positions, present, valid = two_organ_batch()
  results = losses_and_grads(jnp.asarray(positions), present, valid, TWO_ORGANS)
  expected = weighted_oracle(positions, present, valid, TWO_ORGANS.organ_slices(0))
  for name, value in expected.items():
    np.testing.assert_allclose(float(results[name][0]), value, rtol=1e-5, err_msg=name)


def test_absent_organ_does_not_set_largest_perimeter():
  positions, present, valid = two_organ_batch()
  reference = losses_and_grads(jnp.asarray(positions), present, valid, TWO_ORGANS)
  # The absent organ becomes huge; if it counted, it would shrink every weight.
  positions[1, 4:] *= 1000.0
  results = losses_and_grads(jnp.asarray(positions), present, valid, TWO_ORGANS)
  for name in reference:
    assert float(results[name][0]) == float(reference[name][0]), name


def test_absent_organ_gets_zero_gradient():
  positions, present, valid = two_organ_batch()
  results = losses_and_grads(jnp.asarray(positions), present, valid, TWO_ORGANS)
  for name, (_, grad) in results.items():
    assert bool(jnp.all(grad[1, 4:] == 0.0)), name


def test_invalid_image_is_left_out():
  positions, present, valid = two_organ_batch()
  valid = np.array([True, False])
  results = losses_and_grads(jnp.asarray(positions), present, valid, TWO_ORGANS)
  expected = weighted_oracle(positions, present, valid, TWO_ORGANS.organ_slices(0))
  for name, value in expected.items():
    np.testing.assert_allclose(float(results[name][0]), value, rtol=1e-5, err_msg=name)


def test_weights_are_constants_in_gradient():
  positions, present, valid = two_organ_batch()
  slices = TWO_ORGANS.organ_slices(0)
  # The same weights as the loss uses, fixed as numpy constants.
  perimeters = np.array([[numpy_ring_terms(positions[b, s])["perimeter"] for s in slices]
                         for b in range(2)])
  weights = np.where(present, perimeters, 0.0) / np.max(perimeters[present])

  def fixed_weight_curvature(p):
    per_image = []
    for b in range(2):
      total = 0.0
      for o, s in enumerate(slices):
        if present[b, o]:
          total = total + weights[b, o] * edges.ring_terms(p[b, s])["curvature"]
      per_image.append(total)
    return jnp.mean(jnp.stack(per_image))

  expected = jax.grad(fixed_weight_curvature)(jnp.asarray(positions))
  _, grad = losses_and_grads(jnp.asarray(positions), present, valid, TWO_ORGANS)["curvature"]
  np.testing.assert_allclose(np.asarray(grad), np.asarray(expected), rtol=1e-4, atol=1e-6)


def test_organ_count_mismatch_raises():
  with pytest.raises(ValueError, match="1 organs but the graph template has 2"):
    edges.edge_losses(jnp.zeros((1, 10, 2)), TWO_ORGANS, 0, jnp.ones((1, 1), bool),
                      jnp.ones((1,), bool))
