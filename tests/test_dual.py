"""Dual model: pixel decoder shapes, wiring into the graph skips, and its loss."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mask_hybridgnet_jax.losses.pixel import bce_with_logits, pixel_mask_losses
from mask_hybridgnet_jax.models.hybridgnet import HybridGNet, build_model
from mask_hybridgnet_jax.predict import network_masks_to_original
from mask_hybridgnet_jax.preprocess import SquareTransform
from mask_hybridgnet_jax.topology import GraphTemplate

TEMPLATE = GraphTemplate(("a", "b"), (1, 2), (32, 16), 3)
SIZE = 32


@pytest.fixture(scope="module")
def dual_model():
  model = HybridGNet(TEMPLATE, filters=4, latent_dim=8, cheb_k=2, dual=True)
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(2, SIZE, SIZE, 1)), jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  return model, variables, images


def test_dual_output_shapes(dual_model):
  model, variables, images = dual_model
  positions, aux = model.apply(variables, images, train=False)
  assert positions.shape == (2, 48, 2)
  assert aux["mask_logits"].shape == (2, SIZE, SIZE, 2)
  assert aux["masks"].shape == (2, SIZE, SIZE, 2)
  assert [p.shape for p in aux["level_positions"]] == [(2, 12, 2), (2, 24, 2), (2, 48, 2)]


def test_dual_masks_are_sigmoid_of_logits(dual_model):
  model, variables, images = dual_model
  _, aux = model.apply(variables, images, train=False)
  np.testing.assert_allclose(aux["masks"], jax.nn.sigmoid(aux["mask_logits"]), rtol=1e-6)


def test_pixel_decoder_stage_shapes(dual_model):
  _, variables, _ = dual_model
  params = variables["params"]["pixel_decoder"]
  # Input 32 gives encoder stages of 4, 8 and 16 channels at 32, 16 and 8 px;
  # each decoder stage upsamples to that stage's channels.
  assert params["up0"]["kernel"].shape == (2, 2, 8, 4)
  assert params["up2"]["kernel"].shape == (2, 2, 32, 16)
  assert params["logits"]["kernel"].shape == (1, 1, 4, 2)


def test_graph_skips_sample_pixel_decoder(dual_model):
  model, variables, images = dual_model

  def graph_output(decoder_params):
    params = {**variables["params"], "pixel_decoder": decoder_params}
    positions, _ = model.apply({"params": params}, images, train=False)
    return jnp.sum(positions)

  grads = jax.grad(graph_output)(variables["params"]["pixel_decoder"])
  # Only the skips connect the finest decoder stage to the node positions.
  stage0 = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads["stage0"]))
  assert stage0 > 0


def test_single_model_has_no_masks():
  model = HybridGNet(TEMPLATE, filters=4, latent_dim=8, cheb_k=2)
  images = jnp.zeros((1, SIZE, SIZE, 1))
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  _, aux = model.apply(variables, images, train=False)
  assert "masks" not in aux
  assert "pixel_decoder" not in variables["params"]


def test_build_model_without_dual_field():
  config = ml_collections.ConfigDict(dict(
      block="residual", filters=4, latent_dim=8, cheb_k=2, norm="group", dtype="float32",
      log_var_clip=10.0, propagation="dense", input_channels=1))
  assert build_model(config, TEMPLATE).dual is False


def _known_batch():
  masks = np.zeros((2, 2, 4, 4), np.float32)
  masks[0, 0, 1:3, 1:3] = 1.0  # 4 of 16 pixels
  masks[1, 0, :, :2] = 1.0  # 8 of 16 pixels
  return {"masks": jnp.asarray(masks),
          "present": jnp.asarray([[True, False], [True, False]]),
          "valid": jnp.asarray([True, True])}


def test_pixel_loss_half_probability():
  batch = _known_batch()
  logits = jnp.zeros((2, 4, 4, 2))
  losses = pixel_mask_losses(logits, batch)
  # sigmoid(0) = 0.5: Dice = 1 - 2 * 0.5 * |Y| / (0.5 * 16 + |Y|), BCE = log 2.
  dice_0 = 1 - 4.0 / (8.0 + 4.0 + 1e-6)
  dice_1 = 1 - 8.0 / (8.0 + 8.0 + 1e-6)
  np.testing.assert_allclose(float(losses["dice"]), (dice_0 + dice_1) / 2, rtol=1e-6)
  np.testing.assert_allclose(float(losses["bce"]), np.log(2.0), rtol=1e-6)


def test_pixel_loss_exact_mask_near_zero():
  batch = _known_batch()
  logits = jnp.moveaxis(jnp.where(batch["masks"] > 0, 30.0, -30.0), 1, -1)
  losses = pixel_mask_losses(logits, batch)
  assert float(losses["dice"]) < 1e-6
  assert float(losses["bce"]) < 1e-12


def test_pixel_loss_ignores_absent_and_invalid():
  batch = _known_batch()
  logits = np.zeros((2, 4, 4, 2), np.float32)
  logits[..., 1] = 50.0  # organ "b" is absent everywhere: any prediction is free
  only_first = dict(batch, valid=jnp.asarray([True, False]))
  losses = pixel_mask_losses(jnp.asarray(logits), only_first)
  np.testing.assert_allclose(float(losses["dice"]), 1 - 4.0 / (12.0 + 1e-6), rtol=1e-6)
  np.testing.assert_allclose(float(losses["bce"]), np.log(2.0), rtol=1e-6)


def test_bce_with_logits_matches_direct_formula():
  logits = jnp.asarray([[-3.0, -0.5], [0.5, 4.0]])
  target = jnp.asarray([[0.0, 1.0], [1.0, 0.0]])
  p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
  t = np.asarray(target, np.float64)
  expected = np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
  np.testing.assert_allclose(float(bce_with_logits(logits, target)), expected, rtol=1e-6)


def test_bce_with_logits_finite_gradient_when_saturated():
  grad = jax.grad(lambda z: jnp.sum(bce_with_logits(z, jnp.zeros((1, 2)))))(
      jnp.asarray([[200.0, -200.0]]))
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad, [[0.5, 0.0]], atol=1e-6)


def test_pixel_loss_shape_mismatch_rejected():
  with pytest.raises(ValueError, match="one mask channel per organ"):
    pixel_mask_losses(jnp.zeros((2, 4, 4, 3)), _known_batch())


def test_network_masks_to_original_identity():
  probabilities = np.zeros((4, 4, 2), np.float32)
  probabilities[1, 2, 0] = 0.9
  probabilities[3, 0, 1] = 0.6
  probabilities[0, 0, 1] = 0.5  # exactly 0.5 is outside
  masks = network_masks_to_original(probabilities, SquareTransform(4, 4, 4))
  expected = np.zeros((2, 4, 4), bool)
  expected[0, 1, 2] = True
  expected[1, 3, 0] = True
  np.testing.assert_array_equal(masks, expected)


def test_network_masks_to_original_padded():
  # A 2 x 4 image is padded by one row above and below to 4 x 4; at S = 4
  # original row r sits on network row r + 1.
  probabilities = np.zeros((4, 4, 1), np.float32)
  probabilities[1, :, 0] = 1.0
  masks = network_masks_to_original(probabilities, SquareTransform(2, 4, 4))
  np.testing.assert_array_equal(masks[0], [[True] * 4, [False] * 4])


def _trained_dual(dual_model):
  from mask_hybridgnet_jax.organs import DatasetMetadata, Organ
  from mask_hybridgnet_jax.predict import TrainedModel

  model, variables, _ = dual_model
  config = ml_collections.ConfigDict({"dataset": {"image_size": SIZE}})
  metadata = DatasetMetadata((Organ("a", 1), Organ("b", 2)))
  return TrainedModel(config, TEMPLATE, metadata, model, variables, 0, "in-memory")


def test_predict_files_writes_pixel_masks(dual_model, tmp_path):
  from mask_hybridgnet_jax.io.atomic import write_png_atomic
  from mask_hybridgnet_jax.io.images import read_label_map
  from mask_hybridgnet_jax.predict import Predictor, predict_files

  image_path = tmp_path / "scan.png"
  write_png_atomic(image_path, (np.arange(20 * 30).reshape(20, 30) % 251).astype(np.uint8))
  predictor = Predictor(_trained_dual(dual_model), batch_size=1)
  report = predict_files(predictor, [str(image_path)], str(tmp_path / "out"), overlay=False,
                         write_pixel_masks=True)
  pixel_path = tmp_path / "out" / "scan_pixel_mask.png"
  assert report.failures == {}
  assert str(pixel_path) in report.outputs[str(image_path)]
  label_map = read_label_map(pixel_path)
  assert label_map.shape == (20, 30)
  assert set(np.unique(label_map)) <= {0, 1, 2}


def test_pixel_masks_rejected_for_single_model(tmp_path):
  from mask_hybridgnet_jax.organs import DatasetMetadata, Organ
  from mask_hybridgnet_jax.predict import Predictor, TrainedModel, predict_files

  model = HybridGNet(TEMPLATE, filters=4, latent_dim=8, cheb_k=2)
  config = ml_collections.ConfigDict({"dataset": {"image_size": SIZE}})
  metadata = DatasetMetadata((Organ("a", 1), Organ("b", 2)))
  trained = TrainedModel(config, TEMPLATE, metadata, model, {}, 0, "in-memory")
  with pytest.raises(ValueError, match="no pixel decoder"):
    predict_files(Predictor(trained), [], str(tmp_path), write_pixel_masks=True)
