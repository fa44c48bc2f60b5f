"""Tests for the encoder, Chebyshev convolution, graph decoder and HybridGNet."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mask_hybridgnet_jax.contours import signed_area
from mask_hybridgnet_jax.models.chebconv import ChebConv
from mask_hybridgnet_jax.models.decoder import (
    bilinear_sample,
    decoder_widths,
    default_shape,
    sample_patch_mean,
)
from mask_hybridgnet_jax.models.encoder import (
    Encoder,
    Norm,
    encoder_depth,
    group_norm_groups,
    se_resnext_width,
)
from mask_hybridgnet_jax.models.hybridgnet import HybridGNet, build_model
from mask_hybridgnet_jax.topology import GraphTemplate, scaled_laplacian_from_adjacency

IMAGE_SIZE = 64
BATCH = 2
# Two organs, three levels: 36 nodes at the coarsest level, 144 at full resolution.
TEMPLATE = GraphTemplate(("left", "right"), (1, 2), (64, 80), num_levels=3)


def _images(size: int = IMAGE_SIZE, batch: int = BATCH, channels: int = 1) -> jax.Array:
  rng = np.random.default_rng(0)
  return jnp.asarray(rng.uniform(size=(batch, size, size, channels)), jnp.float32)


def _init_and_apply(model: nn.Module, *args, **kwargs):
  """Initialise and run a module in one compilation; returns `(variables, output)`."""

  @jax.jit
  def run(key, *args):
    output, variables = model.init_with_output({"params": key}, *args, **kwargs)
    return variables, output

  return run(jax.random.key(0), *args)


def _random_variables(model: nn.Module, images: jax.Array, seed: int = 0) -> dict:
  """Fill the model's variable structure from a seeded normal without compiling the initialisers.

  Compiling the initialisers costs several seconds per model on CPU; tests that
  only need some valid parameters use this instead.
  """
  shapes = jax.eval_shape(
      lambda x: model.init({"params": jax.random.key(0)}, x, train=False), images)
  rng = np.random.default_rng(seed)

  def fill(path, shape):
    name = path[-1].key
    if name in ("scale", "var"):
      return jnp.ones(shape.shape, shape.dtype)
    if name == "mean":
      return jnp.zeros(shape.shape, shape.dtype)
    return jnp.asarray(rng.normal(0.0, 0.1, shape.shape), shape.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def residual_run():
  model = HybridGNet(TEMPLATE, block="residual")
  images = _images()
  variables, (positions, aux) = _init_and_apply(model, images, train=False)
  return model, images, variables, positions, aux


# Encoder.


@pytest.mark.parametrize("size, depth", [(32, 3), (64, 4), (128, 5), (256, 5), (512, 5)])
def test_encoder_depth(size, depth):
  assert encoder_depth(size) == depth


@pytest.mark.parametrize("size", [4, 48, 100])
def test_encoder_depth_invalid_size(size):
  with pytest.raises(ValueError, match=str(size)):
    encoder_depth(size)


@pytest.mark.parametrize("size", [64, 256])
def test_encoder_feature_shapes(size):
  encoder = Encoder(block="residual")
  images = jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32)
  variables = jax.eval_shape(
      lambda x: encoder.init({"params": jax.random.key(0)}, x, train=False), images)
  mu, log_var, features = jax.eval_shape(
      lambda v, x: encoder.apply(v, x, train=False), variables, images)
  depth = encoder_depth(size)
  expected = [(1, size // 2**i, size // 2**i, 16 * 2**i) for i in range(depth)]
  assert [f.shape for f in features] == expected
  assert mu.shape == (1, 64)
  assert log_var.shape == (1, 64)


def test_se_resnext_width():
  assert [se_resnext_width(c) for c in (16, 32, 64, 512)] == [32, 64, 128, 1024]


def test_group_norm_groups():
  assert [group_norm_groups(c) for c in (8, 16, 64, 48, 2)] == [8, 16, 32, 24, 2]


def test_instance_norm_per_channel():
  x = jnp.asarray(np.random.default_rng(1).normal(3.0, 2.0, size=(2, 8, 8, 4)), jnp.float32)
  norm = Norm("instance")
  variables = norm.init(jax.random.key(0), x, train=False)
  y = np.asarray(norm.apply(variables, x, train=False))
  expected = (x - x.mean(axis=(1, 2), keepdims=True)) / np.sqrt(
      x.var(axis=(1, 2), keepdims=True) + 1e-5)
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_group_norm_groups_of_channels():
  # 64 channels -> 32 groups of 2 channels each.
  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 4, 4, 64)), jnp.float32)
  norm = Norm("group")
  variables = norm.init(jax.random.key(0), x, train=False)
  y = np.asarray(norm.apply(variables, x, train=False))
  grouped = np.asarray(x).reshape(1, 4, 4, 32, 2)
  mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
  var = grouped.var(axis=(1, 2, 4), keepdims=True)
  expected = ((grouped - mean) / np.sqrt(var + 1e-5)).reshape(1, 4, 4, 64)
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_encoder_log_var_clipped():
  encoder = Encoder(block="residual", log_var_clip=3.0)
  images = _images(size=32, batch=1)
  variables = jax.eval_shape(
      lambda x: encoder.init({"params": jax.random.key(0)}, x, train=False), images)
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables["params"])
  apply = jax.jit(lambda p, x: encoder.apply({"params": p}, x, train=False))
  params["log_var"]["bias"] = jnp.full_like(params["log_var"]["bias"], 1e4)
  _, log_var, _ = apply(params, images)
  # The upper bound is the prior's log-variance, 0.
  np.testing.assert_array_equal(np.asarray(log_var), np.zeros((1, 64), np.float32))
  params["log_var"]["bias"] = jnp.full_like(params["log_var"]["bias"], -1e4)
  _, log_var, _ = apply(params, images)
  np.testing.assert_array_equal(np.asarray(log_var), np.full((1, 64), -3.0, np.float32))


def test_encoder_bfloat16_outputs_float32():
  encoder = Encoder(block="residual", dtype="bfloat16")
  images = _images(size=32, batch=1)
  variables, (mu, log_var, features) = _init_and_apply(encoder, images, train=False)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  assert {a.dtype for a in (mu, log_var, *features)} == {jnp.dtype(jnp.float32)}
  assert bool(jnp.all(jnp.isfinite(mu)))


# Chebyshev convolution.


def _ring_laplacian(n: int) -> np.ndarray:
  return GraphTemplate(("ring",), (1,), (n,), num_levels=1).scaled_laplacian(0)


def _cheb_params(kernel: np.ndarray, bias: np.ndarray | None = None) -> dict:
  params = {"kernel": jnp.asarray(kernel, jnp.float32)}
  if bias is not None:
    params["bias"] = jnp.asarray(bias, jnp.float32)
  return {"params": params}


def _cheb_oracle(x: np.ndarray, laplacian: np.ndarray, kernel: np.ndarray,
                 bias: np.ndarray) -> np.ndarray:
  """Chebyshev recursion in float64 numpy for one example `[n, F]`."""
  terms = [x, laplacian @ x]
  for _ in range(2, kernel.shape[0]):
    terms.append(2 * laplacian @ terms[-1] - terms[-2])
  return sum(t @ w for t, w in zip(terms, kernel)) + bias


@pytest.mark.parametrize("propagation", ["dense", "segment_sum"])
def test_chebconv_golden_ring(propagation):
  # With W0 = 0 and W1 = 1 the output is L x; x = e0 on a 4-node ring.
  template = GraphTemplate(("ring",), (1,), (4,), num_levels=1)
  laplacian = template.graph(0) if propagation == "segment_sum" else template.scaled_laplacian(0)
  conv = ChebConv(1, k=2, use_bias=False, propagation=propagation)
  kernel = np.array([[[0.0]], [[1.0]]])
  x = jnp.asarray([[[1.0], [0.0], [0.0], [0.0]]])
  out = conv.apply(_cheb_params(kernel), x, laplacian)
  np.testing.assert_allclose(np.asarray(out)[0, :, 0], [0.0, -0.5, 0.0, -0.5], atol=1e-7)


def test_chebconv_matches_numpy_oracle():
  template = GraphTemplate(("a", "b"), (1, 2), (8, 12), num_levels=1)
  laplacian = template.scaled_laplacian(0)
  rng = np.random.default_rng(3)
  x = rng.normal(size=(1, 20, 3))
  kernel = rng.normal(size=(6, 3, 5))
  bias = rng.normal(size=5)
  conv = ChebConv(5, k=6)
  out = conv.apply(_cheb_params(kernel, bias), jnp.asarray(x, jnp.float32), laplacian)
  expected = _cheb_oracle(x[0], laplacian.astype(np.float64), kernel, bias)
  np.testing.assert_allclose(np.asarray(out)[0], expected, rtol=1e-4, atol=1e-4)


def test_chebconv_dense_equals_segment_sum():
  template = GraphTemplate(("a", "b"), (1, 2), (8, 12), num_levels=1)
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 20, 3)), jnp.float32)
  dense = ChebConv(4, propagation="dense")
  variables = dense.init(jax.random.key(0), x, template.scaled_laplacian(0))
  by_matrix = dense.apply(variables, x, template.scaled_laplacian(0))
  by_edges = ChebConv(4, propagation="segment_sum").apply(variables, x, template.graph(0))
  np.testing.assert_allclose(np.asarray(by_edges), np.asarray(by_matrix), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("propagation", ["dense", "segment_sum"])
def test_chebconv_padded_node_does_not_change_real_nodes(propagation):
  template = GraphTemplate(("ring",), (1,), (8,), num_levels=1)
  # Node 8 is padding: degree 0, no edges, so L has a zero row and column for it.
  adjacency = np.zeros((9, 9), np.float32)
  adjacency[:8, :8] = template.adjacency(0)
  laplacian = (template.graph(0) if propagation == "segment_sum" else
               scaled_laplacian_from_adjacency(adjacency))
  x = np.random.default_rng(5).normal(size=(1, 9, 3)).astype(np.float32)
  changed = x.copy()
  changed[0, 8] = 1e3
  conv = ChebConv(4, propagation=propagation)
  variables = conv.init(jax.random.key(0), jnp.asarray(x), laplacian)
  out = conv.apply(variables, jnp.asarray(x), laplacian)
  out_changed = conv.apply(variables, jnp.asarray(changed), laplacian)
  np.testing.assert_array_equal(np.asarray(out)[0, :8], np.asarray(out_changed)[0, :8])


def test_chebconv_init_scale():
  x = jnp.zeros((1, 4, 64))
  variables = ChebConv(64).init(jax.random.key(0), x, _ring_laplacian(4))
  kernel_std = float(jnp.std(variables["params"]["kernel"]))
  assert abs(kernel_std - 0.1) < 0.005


# Bilinear gather.


def _bilinear_oracle(feature_map: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Loop over each point's four neighbouring pixels; pixels off the map contribute 0."""
  height, width, channels = feature_map.shape
  out = np.zeros((len(points), channels))
  for m, (x, y) in enumerate(points):
    x0, y0 = math.floor(x), math.floor(y)
    for cx in (x0, x0 + 1):
      for cy in (y0, y0 + 1):
        if 0 <= cx < width and 0 <= cy < height:
          out[m] += (1 - abs(x - cx)) * (1 - abs(y - cy)) * feature_map[cy, cx]
  return out


_POINTS = np.array(
    [
        [0.0, 0.0],
        [2.25, 1.5],
        [4.0, 3.0],  # last column, exact
        [4.5, 1.0],  # half outside on the right
        [-0.5, 2.0],  # half outside on the left
        [1.3, -0.7],  # partly above
        [-3.0, -3.0],  # far outside
        [9.0, 1.0],  # far outside
        [3.7, 3.9],  # partly below
    ],
    np.float32,
)


def test_bilinear_sample_matches_oracle():
  # Map of 4 rows and 5 columns, so x and y ranges differ.
  feature_map = np.random.default_rng(6).normal(size=(4, 5, 3)).astype(np.float32)
  out = bilinear_sample(jnp.asarray(feature_map[None]), jnp.asarray(_POINTS[None]))
  expected = _bilinear_oracle(feature_map, _POINTS)
  np.testing.assert_allclose(np.asarray(out)[0], expected, rtol=1e-5, atol=1e-6)


def test_bilinear_sample_outside_reads_zero():
  feature_map = np.ones((1, 4, 5, 2), np.float32)
  out = bilinear_sample(jnp.asarray(feature_map), jnp.asarray([[[-3.0, -3.0], [9.0, 1.0]]]))
  np.testing.assert_array_equal(np.asarray(out), np.zeros((1, 2, 2)))


def test_sample_patch_mean_matches_oracle():
  size = 8
  feature_map = np.random.default_rng(7).normal(size=(size, size, 2)).astype(np.float32)
  positions = np.array([[0.5, 0.5], [0.0, 0.0], [0.97, 0.3], [1.0, 1.0]], np.float32)
  out = sample_patch_mean(jnp.asarray(feature_map[None]), jnp.asarray(positions[None]))
  expected = []
  for p in positions:
    patch = [p * size + np.array([dx, dy]) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    expected.append(_bilinear_oracle(feature_map, np.array(patch)).mean(axis=0))
  np.testing.assert_allclose(np.asarray(out)[0], np.array(expected), rtol=1e-5, atol=1e-5)


def test_bilinear_sample_gradient_finite():
  feature_map = jnp.asarray(np.random.default_rng(8).normal(size=(1, 4, 4, 2)), jnp.float32)
  points = jnp.asarray([[[1.5, 2.5], [-2.0, 0.0], [3.0, 3.0]]])
  grad = jax.grad(lambda p: jnp.sum(bilinear_sample(feature_map, p)))(points)
  assert bool(jnp.all(jnp.isfinite(grad)))


# Decoder channel plan.


@pytest.mark.parametrize(
    "num_levels, widths",
    [(2, (32, 16, 8)), (3, (32, 24, 16, 8)), (4, (32, 32, 24, 16, 8))],
)
def test_decoder_widths(num_levels, widths):
  assert decoder_widths(num_levels) == widths


def test_decoder_kernel_shapes_three_levels(residual_run):
  _, _, variables, _, _ = residual_run
  decoder = variables["params"]["decoder"]
  # Skip maps at S = 64: level 2 samples 128 channels, level 1 64, level 0 32.
  expected = {
      "latent_to_nodes": (64, 32 * 36),
      "level2_cheb0": (6, 32, 32),
      "level2_cheb1": (6, 32, 24),
      "level1_cheb0": (6, 24 + 2 + 128, 24),
      "level1_cheb1": (6, 24, 16),
      "level0_cheb0": (6, 16 + 2 + 64, 16),
      "level0_cheb1": (6, 16, 8),
      "head_cheb0": (6, 8 + 2 + 32, 8),
      "head_cheb1": (6, 8, 2),
  }
  shapes = {name: decoder[name]["kernel"].shape for name in expected}
  assert shapes == expected


def test_decoder_final_conv_has_no_bias(residual_run):
  _, _, variables, _, _ = residual_run
  assert "bias" not in variables["params"]["decoder"]["head_cheb1"]


def test_latent_dense_init_scale(residual_run):
  _, _, variables, _, _ = residual_run
  kernel_std = float(jnp.std(variables["params"]["decoder"]["latent_to_nodes"]["kernel"]))
  assert abs(kernel_std - 0.5) < 0.02


@pytest.mark.parametrize("num_levels, counts", [(2, (32, 40)), (4, (64, 96))])
def test_model_other_level_counts(num_levels, counts):
  template = GraphTemplate(("a", "b"), (1, 2), counts, num_levels=num_levels)
  model = HybridGNet(template)
  images = jax.ShapeDtypeStruct((1, 64, 64, 1), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init({"params": jax.random.key(0)}, x, train=False), images)
  positions, aux = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, images)
  assert positions.shape == (1, sum(counts), 2)
  expected = [(1, sum(counts) // 2**level, 2) for level in range(num_levels - 1, -1, -1)]
  assert [p.shape for p in aux["level_positions"]] == expected


# Full model.


def test_model_output_shapes(residual_run):
  _, _, _, positions, aux = residual_run
  assert positions.shape == (BATCH, 144, 2)
  assert [p.shape for p in aux["level_positions"]] == [(BATCH, 36, 2), (BATCH, 72, 2),
                                                        (BATCH, 144, 2)]
  assert [int(level) for level in aux["levels"]] == [2, 1, 0]
  assert aux["mu"].shape == (BATCH, 64)
  assert aux["log_var"].shape == (BATCH, 64)


def test_model_outputs_finite(residual_run):
  _, _, _, positions, aux = residual_run
  assert bool(jnp.all(jnp.isfinite(positions)))
  for array in (*aux["level_positions"], aux["mu"], aux["log_var"]):
    assert bool(jnp.all(jnp.isfinite(array)))


def test_model_skip_positions_clipped(residual_run):
  _, _, _, _, aux = residual_run
  for array in aux["level_positions"]:
    assert float(jnp.min(array)) >= 0.0
    assert float(jnp.max(array)) <= 1.0


def test_model_deterministic_without_sampling(residual_run):
  model, images, variables, positions, _ = residual_run
  again, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  np.testing.assert_array_equal(np.asarray(again), np.asarray(positions))


def test_model_sampling_uses_latent_rng(residual_run):
  model, images, variables, positions, aux = residual_run

  @jax.jit
  def sample(key):
    return model.apply(variables, images, train=False, sample_latent=True,
                       rngs={"latent": key})

  first, first_aux = sample(jax.random.key(1))
  repeat, _ = sample(jax.random.key(1))
  other, _ = sample(jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(first), np.asarray(repeat))
  assert not np.allclose(np.asarray(first), np.asarray(other))
  assert not np.allclose(np.asarray(first), np.asarray(positions))
  # Separate compilations may fuse differently, hence the float tolerance.
  np.testing.assert_allclose(np.asarray(first_aux["mu"]), np.asarray(aux["mu"]), atol=1e-5)


def test_model_gradients_finite():
  model = HybridGNet(TEMPLATE, block="residual")
  images = _images(size=32)
  variables = _random_variables(model, images)

  def loss(params):
    positions, aux = model.apply({"params": params}, images, train=True,
                                 rngs={"latent": jax.random.key(3)})
    return jnp.sum(positions**2) + sum(jnp.sum(p) for p in aux["level_positions"])

  grads = jax.jit(jax.grad(loss))(variables["params"])
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_model_segment_sum_equals_dense(residual_run):
  _, images, variables, positions, aux = residual_run
  model = HybridGNet(TEMPLATE, block="residual", propagation="segment_sum")
  by_edges, aux_edges = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  np.testing.assert_allclose(np.asarray(by_edges), np.asarray(positions), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(aux_edges["level_positions"][-1]),
                             np.asarray(aux["level_positions"][-1]), rtol=1e-4, atol=1e-4)


def test_model_se_resnext_runs():
  model = HybridGNet(TEMPLATE, block="se_resnext")
  images = _images(batch=1)
  variables = _random_variables(model, images)
  positions, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  assert positions.shape == (1, 144, 2)
  assert bool(jnp.all(jnp.isfinite(positions)))


def test_model_batch_norm_updates_stats():
  model = HybridGNet(TEMPLATE, block="residual", norm="batch")
  images = _images(size=32)
  variables = _random_variables(model, images)

  @jax.jit
  def train_apply(v, x):
    return model.apply(v, x, train=True, rngs={"latent": jax.random.key(1)},
                       mutable=["batch_stats"])

  (positions, _), updates = train_apply(variables, images)
  before = variables["batch_stats"]["encoder"]["stage0"]
  after = updates["batch_stats"]["encoder"]["stage0"]
  assert bool(jnp.all(jnp.isfinite(positions)))
  assert not np.allclose(jax.tree.leaves(before)[0], jax.tree.leaves(after)[0])


def test_model_rejects_wrong_channels():
  model = HybridGNet(TEMPLATE, input_channels=2)
  with pytest.raises(ValueError, match="input channel"):
    jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x, train=False),
                   jax.ShapeDtypeStruct((1, 64, 64, 1), jnp.float32))


def test_model_rejects_small_input():
  model = HybridGNet(TEMPLATE)
  with pytest.raises(ValueError, match="at least 32"):
    jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x, train=False),
                   jax.ShapeDtypeStruct((1, 16, 16, 1), jnp.float32))


def test_model_rejects_invalid_option():
  with pytest.raises(ValueError, match="norm='layer'"):
    HybridGNet(TEMPLATE, norm="layer")


def _model_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict({
      "block": "residual", "filters": 16, "latent_dim": 32, "cheb_k": 6, "norm": "group",
      "dtype": "float32", "log_var_clip": 10.0, "propagation": "dense", "input_channels": 1,
      "shape_prior": False,
  })
  config.update(overrides)
  return config


def test_build_model_reads_config():
  model = build_model(_model_config(latent_dim=32, norm="instance"), TEMPLATE)
  assert model.latent_dim == 32
  assert model.norm == "instance"
  assert model.template == TEMPLATE


def test_build_model_missing_field():
  config = _model_config()
  del config["cheb_k"]
  with pytest.raises(ValueError, match="cheb_k"):
    build_model(config, TEMPLATE)


def _ring_shape(template: GraphTemplate) -> np.ndarray:
  """Each organ a circle of radius 0.2 around its own centre, [N0, 2]."""
  rings = []
  for o, n in enumerate(template.node_counts):
    angle = 2 * np.pi * np.arange(n) / n
    centre = (0.3 + 0.4 * o, 0.5)
    rings.append(np.stack([centre[0] + 0.2 * np.cos(angle),
                           centre[1] + 0.2 * np.sin(angle)], axis=1))
  return np.concatenate(rings).astype(np.float32)


def _prior_model_and_params(mean_shape):
  config = _model_config(shape_prior=True, filters=8, latent_dim=8)
  model = build_model(config, TEMPLATE, mean_shape=mean_shape)
  images = jnp.zeros((1, 64, 64, 1), jnp.float32)
  params = model.init({"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(1)},
                      images, train=False)["params"]
  return model, params, images


def test_shape_prior_parameter_starts_at_the_mean_shape():
  shape = _ring_shape(TEMPLATE)
  _, params, _ = _prior_model_and_params(shape)
  np.testing.assert_allclose(params["decoder"]["shape_prior"], shape, atol=1e-7)


def test_shape_prior_offsets_final_and_skip_positions():
  # With the last head convolution and every skip's linear map zeroed, the
  # decoder outputs the prior itself, averaged down at the coarser levels.
  shape = _ring_shape(TEMPLATE)
  model, params, images = _prior_model_and_params(shape)
  params = jax.tree_util.tree_map(lambda x: x, params)
  decoder = dict(params["decoder"])
  decoder["head_cheb1"] = jax.tree_util.tree_map(jnp.zeros_like, decoder["head_cheb1"])
  for level in range(TEMPLATE.num_levels):
    name = f"level{level}_skip"
    decoder[name] = jax.tree_util.tree_map(jnp.zeros_like, decoder[name])
  params = {**params, "decoder": decoder}
  positions, aux = model.apply({"params": params}, images, train=False)
  np.testing.assert_allclose(positions[0], shape, atol=1e-6)
  expected = shape
  by_level = {0: shape}
  for level in range(TEMPLATE.num_levels - 1):
    expected = TEMPLATE.downsample(level) @ expected
    by_level[level + 1] = expected
  for level, skip in zip(aux["levels"], aux["level_positions"]):
    np.testing.assert_allclose(skip[0], np.clip(by_level[level], 0, 1), atol=1e-6)


def test_shape_prior_rejects_wrong_size():
  with pytest.raises(ValueError, match="mean_shape has 10 nodes"):
    _prior_model_and_params(np.zeros((10, 2), np.float32))


def test_default_shape_is_ordered_circles():
  shape = default_shape(TEMPLATE)
  for organ_slice in TEMPLATE.organ_slices(0):
    ring = shape[organ_slice]
    radii = np.hypot(ring[:, 0] - 0.5, ring[:, 1] - 0.5)
    np.testing.assert_allclose(radii, 0.25, atol=1e-6)
    assert signed_area(ring) > 0


def test_shape_prior_without_mean_shape_starts_as_circles():
  _, params, _ = _prior_model_and_params(None)
  np.testing.assert_allclose(params["decoder"]["shape_prior"], default_shape(TEMPLATE),
                             atol=1e-7)
