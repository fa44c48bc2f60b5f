"""Tests for the combined objective, the loss schedules and the KL term."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mask_hybridgnet_jax.losses import chamfer, edges, kl, objective, raster, schedules
from mask_hybridgnet_jax.topology import GraphTemplate

# Two organs: 16 and 8 nodes at level 0, 8 and 4 at level 1.
TEMPLATE = GraphTemplate(("left", "right"), (1, 2), (16, 8), num_levels=2)
SIZE = 32
LATENT = 4


def loss_config(**changes) -> ml_collections.ConfigDict:
  config = schedules.default_loss_config()
  for name, value in changes.items():
    config[name] = value
  return config


def weights(raster_weight: float) -> dict[str, jax.Array]:
  values = {"chamfer": 10.0, "same_length": 0.01, "elasticity": 250.0,
            "curvature": 300.0, "kl": 1e-6, "raster": raster_weight}
  return {name: jnp.float32(value) for name, value in values.items()}


def ring(num_nodes: int, centre, radius: float, phase: float) -> np.ndarray:
  angles = np.linspace(0.0, 2 * np.pi, num_nodes, endpoint=False) + phase
  return np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)],
                  axis=1)


def make_inputs(seed: int = 0):
  """Predictions and a batch of two 32 x 32 images; organ "right" is absent from image 1."""
  rng = np.random.default_rng(seed)
  budget = 40
  centres = [(10.0, 15.0), (22.0, 16.0)]
  radii = [6.0, 4.5]
  masks = np.zeros((2, 2, SIZE, SIZE), np.float32)
  points = np.full((2, 2, budget, 2), np.nan, np.float32)
  lengths = np.array([[36, 28], [33, 0]], np.int32)
  present = np.array([[True, True], [True, False]])
  y, x = np.mgrid[0:SIZE, 0:SIZE]
  for b in range(2):
    for o in range(2):
      if not present[b, o]:
        continue
      masks[b, o] = np.hypot(x - centres[o][0], y - centres[o][1]) <= radii[o]
      boundary = ring(int(lengths[b, o]), centres[o], radii[o], 0.0) / SIZE
      points[b, o, :lengths[b, o]] = boundary
  batch = {
      "masks": masks,
      "points": points,
      "lengths": lengths,
      "present": present,
      "valid": np.array([True, True]),
  }

  def predicted(level: int) -> np.ndarray:
    counts = TEMPLATE.level_node_counts(level)
    nodes = [ring(n, centres[o], radii[o] * 1.1, 0.2) / SIZE for o, n in enumerate(counts)]
    stacked = np.concatenate(nodes, axis=0)[None].repeat(2, axis=0)
    return (stacked + rng.normal(scale=0.005, size=stacked.shape)).astype(np.float32)

  positions = jnp.asarray(predicted(0))
  aux = {
      "level_positions": (jnp.asarray(predicted(1)), jnp.asarray(predicted(0))),
      "levels": (1, 0),
      "mu": jnp.asarray(rng.normal(size=(2, LATENT)).astype(np.float32)),
      "log_var": jnp.asarray(rng.normal(size=(2, LATENT)).astype(np.float32)),
  }
  return positions, aux, batch


@functools.partial(jax.jit, static_argnames="config_items")
def loss_and_grads(positions, arrays, batch, weights, config_items):
  """Loss, metrics and gradients with respect to positions and the aux arrays.

  The model returns `levels` as Python ints, so they stay out of the traced
  arguments here too.
  """
  config = ml_collections.ConfigDict(dict(config_items))

  def total(positions, arrays):
    aux = {**arrays, "levels": (1, 0)}
    return objective.compute_loss(positions, aux, batch, TEMPLATE, weights, config)

  (loss, metrics), grads = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
      positions, arrays)
  return loss, metrics, grads


def run(raster_weight: float, **changes):
  positions, aux, batch = make_inputs()
  arrays = {name: value for name, value in aux.items() if name != "levels"}
  items = tuple(sorted(loss_config(**changes).to_dict().items()))
  return loss_and_grads(positions, arrays, batch, weights(raster_weight), items)


def test_loss_and_gradients_are_finite():
  loss, _, (position_grad, aux_grad) = run(1.0)
  assert bool(jnp.isfinite(loss))
  assert bool(jnp.all(jnp.isfinite(position_grad)))
  for leaf in jax.tree_util.tree_leaves(aux_grad):
    assert bool(jnp.all(jnp.isfinite(leaf)))


def test_absent_organ_gets_zero_gradient():
  _, _, (position_grad, aux_grad) = run(1.0)
  assert bool(jnp.all(position_grad[1, 16:] == 0.0))
  assert bool(jnp.all(aux_grad["level_positions"][0][1, 8:] == 0.0))


def test_raster_branch_adds_weight_times_dice_plus_bce():
  loss_off, _, _ = run(0.0)
  loss_on, metrics_on, _ = run(0.5)
  # Same compiled program, raster term added last: the float32 sums agree to
  # one rounding step of the total.
  raster_term = np.float32(metrics_on["raster_dice"]) + np.float32(metrics_on["raster_bce"])
  expected = np.float32(loss_off) + np.float32(0.5) * raster_term
  np.testing.assert_allclose(float(loss_on), float(expected), rtol=0,
                             atol=float(np.spacing(expected)))


def test_raster_metrics_are_zero_while_weight_is_zero():
  _, metrics, _ = run(0.0)
  assert float(metrics["raster_dice"]) == 0.0
  assert float(metrics["raster_bce"]) == 0.0


@jax.jit
def unweighted_parts(positions, level_positions, mu, log_var, batch):
  """Each loss computed directly from its own module."""
  return {
      "chamfer": [
          chamfer.chamfer_loss(positions, batch, TEMPLATE, 0),
          chamfer.chamfer_loss(level_positions[0], batch, TEMPLATE, 1),
          chamfer.chamfer_loss(level_positions[1], batch, TEMPLATE, 0),
      ],
      "edges": edges.edge_losses(positions, TEMPLATE, 0, batch["present"], batch["valid"]),
      "kl": kl.kl_divergence(mu, log_var),
      "raster": raster.raster_losses(positions, batch, TEMPLATE, 0.1),
  }


def test_raster_metrics_match_raster_losses():
  positions, aux, batch = make_inputs()
  _, metrics, _ = run(1.0)
  expected = unweighted_parts(
      positions, aux["level_positions"], aux["mu"], aux["log_var"], batch)["raster"]
  np.testing.assert_allclose(float(metrics["raster_dice"]), float(expected["dice"]), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["raster_bce"]), float(expected["bce"]), rtol=1e-5)


def test_raster_disabled_matches_zero_weight():
  loss_off, _, _ = run(0.0)
  loss_disabled, metrics, _ = run(1.0, raster_enabled=False)
  assert float(loss_disabled) == float(loss_off)
  assert float(metrics["raster_dice"]) == 0.0


def test_compiles_once_across_raster_switch():
  positions, aux, batch = make_inputs()
  traces = []

  @jax.jit
  def total(positions, weights):
    traces.append(1)
    return objective.compute_loss(positions, aux, batch, TEMPLATE, weights, loss_config())[0]

  total(positions, weights(0.0))
  total(positions, weights(1.0))
  assert len(traces) == 1


def test_total_matches_parts():
  positions, aux, batch = make_inputs()
  loss, metrics, _ = run(1.0)
  parts = unweighted_parts(
      positions, aux["level_positions"], aux["mu"], aux["log_var"], batch)
  chamfer_parts = parts["chamfer"]
  edge_parts = parts["edges"]
  w = weights(1.0)
  expected = (w["chamfer"] * sum(chamfer_parts)
              + w["same_length"] * edge_parts["same_length"]
              + w["elasticity"] * edge_parts["elasticity"]
              + w["curvature"] * edge_parts["curvature"]
              + w["kl"] * parts["kl"]
              + w["raster"] * (parts["raster"]["dice"] + parts["raster"]["bce"]))
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["chamfer_skip_level1"]), float(chamfer_parts[1]),
                             rtol=1e-6)


def test_metrics_keys():
  _, metrics, _ = run(1.0)
  expected = {"total", "chamfer", "chamfer_final", "chamfer_skip_level1",
              "chamfer_skip_level0", "same_length", "elasticity", "curvature", "kl",
              "raster_dice", "raster_bce"}
  expected |= {f"weight_{name}" for name in schedules.WEIGHT_NAMES}
  assert set(metrics) == expected


def test_metrics_total_equals_loss():
  loss, metrics, _ = run(1.0)
  assert float(metrics["total"]) == float(loss)


def test_missing_weight_raises():
  positions, aux, batch = make_inputs()
  incomplete = weights(0.0)
  del incomplete["kl"]
  with pytest.raises(ValueError, match="weights lacks"):
    objective.compute_loss(positions, aux, batch, TEMPLATE, incomplete, loss_config())


def test_invalid_tau_raises():
  positions, aux, batch = make_inputs()
  with pytest.raises(raster.InvalidTauError):
    objective.compute_loss(positions, aux, batch, TEMPLATE, weights(0.0),
                           loss_config(tau=1e-6))


# Schedules. T = 1000 examples.


def test_weights_at_start():
  w = schedules.loss_weights(0, 1000, loss_config())
  expected = {"chamfer": 10.0, "same_length": 0.01, "elasticity": 250.0,
              "curvature": 300.0, "kl": 1e-6, "raster": 0.0}
  for name, value in expected.items():
    np.testing.assert_allclose(float(w[name]), value, rtol=1e-5, err_msg=name)


def test_weights_at_end():
  w = schedules.loss_weights(1000, 1000, loss_config())
  expected = {"chamfer": 100.0, "same_length": 1.0, "elasticity": 2.5,
              "curvature": 3.0, "kl": 1e-3, "raster": 1.0}
  for name, value in expected.items():
    np.testing.assert_allclose(float(w[name]), value, rtol=1e-5, err_msg=name)


def test_weights_at_tenth():
  w = schedules.loss_weights(100, 1000, loss_config())
  np.testing.assert_allclose(float(w["chamfer"]), 19.0, rtol=1e-6)
  # Halfway through the same-length ramp (T / 5) in log space: sqrt(0.01 * 1).
  np.testing.assert_allclose(float(w["same_length"]), 0.1, rtol=1e-5)
  np.testing.assert_allclose(float(w["elasticity"]), 250.0 * 0.01**0.1, rtol=1e-5)


def test_weights_at_half():
  w = schedules.loss_weights(500, 1000, loss_config())
  np.testing.assert_allclose(float(w["curvature"]), 30.0, rtol=1e-5)
  np.testing.assert_allclose(float(w["elasticity"]), 25.0, rtol=1e-5)
  np.testing.assert_allclose(float(w["kl"]), 10**-4.5, rtol=1e-5)
  np.testing.assert_allclose(float(w["same_length"]), 1.0, rtol=1e-6)


def test_raster_weight_starts_at_fifth():
  before = schedules.loss_weights(199, 1000, loss_config())
  at = schedules.loss_weights(200, 1000, loss_config())
  assert float(before["raster"]) == 0.0
  assert float(at["raster"]) == 1.0


def test_raster_weight_disabled():
  w = schedules.loss_weights(1000, 1000, loss_config(raster_enabled=False))
  assert float(w["raster"]) == 0.0


def test_weights_jittable_in_examples_seen():
  traces = []

  @jax.jit
  def weights_at(t):
    traces.append(1)
    return schedules.loss_weights(t, 1000, loss_config())

  eager = schedules.loss_weights(300, 1000, loss_config())
  jitted = weights_at(jnp.int32(300))
  weights_at(jnp.int32(700))
  assert len(traces) == 1
  for name in schedules.WEIGHT_NAMES:
    np.testing.assert_allclose(float(jitted[name]), float(eager[name]), rtol=1e-6,
                               err_msg=name)


def test_weights_reject_non_positive_log_linear_value():
  with pytest.raises(ValueError, match="kl_start = 0.0"):
    schedules.loss_weights(0, 1000, loss_config(kl_start=0.0))


def test_default_loss_config_reference_values():
  config = schedules.default_loss_config()
  assert (config.chamfer_start, config.chamfer_end) == (10.0, 100.0)
  assert (config.elasticity_start, config.elasticity_end) == (250.0, 2.5)
  assert (config.curvature_start, config.curvature_end) == (300.0, 3.0)
  assert (config.kl_start, config.kl_end) == (1e-6, 1e-3)
  assert config.tau == 0.1
  assert config.raster_start_fraction == 0.2


def optim_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      {"learning_rate": 1e-4, "decay_fraction": 0.5, "decay_factor": 0.1})


def test_learning_rate_before_decay():
  schedule = schedules.learning_rate_schedule(optim_config(), 4, 1000)
  # T / 2 = 500 examples = step 125 at batch size 4.
  np.testing.assert_allclose(float(schedule(124)), 1e-4, rtol=1e-6)


def test_learning_rate_after_decay():
  schedule = schedules.learning_rate_schedule(optim_config(), 4, 1000)
  np.testing.assert_allclose(float(schedule(125)), 1e-5, rtol=1e-6)


def test_learning_rate_rejects_bad_batch_size():
  with pytest.raises(ValueError, match="batch_size = 0"):
    schedules.learning_rate_schedule(optim_config(), 0, 1000)


# KL divergence.


def test_kl_of_standard_normal_is_zero():
  assert float(kl.kl_divergence(jnp.zeros((2, 3)), jnp.zeros((2, 3)))) == 0.0


def test_kl_hand_value():
  mu = jnp.array([[1.0, 2.0]])
  log_var = jnp.array([[0.0, np.log(2.0)]])
  # Per dimension -0.5 (1 + log_var - mu^2 - exp(log_var)): 0.5 and 2.5 - ln(2) / 2.
  expected = (0.5 + 2.5 - np.log(2.0) / 2) / 2
  np.testing.assert_allclose(float(kl.kl_divergence(mu, log_var)), expected, rtol=1e-6)


@pytest.mark.parametrize("log_var", [-100.0, 0.0, 100.0])
def test_kl_finite_for_extreme_log_var(log_var):
  value, grads = jax.value_and_grad(kl.kl_divergence, argnums=(0, 1))(
      jnp.ones((2, 3)), jnp.full((2, 3), log_var))
  assert bool(jnp.isfinite(value))
  assert bool(jnp.all(jnp.isfinite(grads[0])))
  assert bool(jnp.all(jnp.isfinite(grads[1])))


def test_kl_leaves_out_invalid_images():
  mu = jnp.array([[1.0, 1.0], [np.nan, 5.0]])
  log_var = jnp.zeros((2, 2))
  value = kl.kl_divergence(mu, log_var, jnp.array([True, False]))
  np.testing.assert_allclose(float(value), 0.5, rtol=1e-6)
