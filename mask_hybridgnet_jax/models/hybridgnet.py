"""HybridGNet: a variational CNN encoder and a Chebyshev graph decoder.

The model maps an image `[B, S, S, C]` to the positions of every contour node
`[B, N0, 2]`, normalised to [0, 1] over the square input. Training samples the
latent by reparameterisation. Inference uses the latent mean, so predictions
are deterministic. This deviates from the published model, which also samples
at inference. Sampling K latents with `sample_latent=True` gives per-node
uncertainty.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mask_hybridgnet_jax.models.chebconv import PROPAGATIONS
from mask_hybridgnet_jax.models.decoder import GraphDecoder
from mask_hybridgnet_jax.models.encoder import BLOCKS, DTYPES, NORMS, Encoder, encoder_depth
from mask_hybridgnet_jax.models.pixel_decoder import PixelDecoder
from mask_hybridgnet_jax.topology import GraphTemplate

# Constructor arguments that `build_model` reads from the model config.
CONFIG_FIELDS = ("block", "filters", "latent_dim", "cheb_k", "norm", "dtype",
                 "log_var_clip", "propagation", "input_channels")
# Fields that configs written before they existed may lack, with the value
# that reproduces those configs' model.
OPTIONAL_CONFIG_FIELDS = {"dual": False, "shape_prior": False}


class HybridGNet(nn.Module):
  """Image -> contour node positions.

  Attributes:
    template: the contour graphs (organs, node counts, levels).
    block: encoder block, "residual" (dense 3x3 convolutions, fast on CPU) or
      "se_resnext" (grouped convolutions, the published model, fast on GPU/TPU).
    filters: channels of the first encoder stage.
    latent_dim: size of the latent Z.
    cheb_k: Chebyshev terms per graph convolution.
    norm: encoder normalisation, "group", "instance" or "batch". "batch" needs
      the "batch_stats" collection mutable when training.
    dtype: encoder computation dtype, "float32" or "bfloat16". The decoder and
      all outputs are float32.
    log_var_clip: lower bound magnitude of the latent log-variance, clipped to
      [-log_var_clip, 0] before `exp`.
    propagation: graph propagation, "dense" or "segment_sum" (same result).
    input_channels: C, 1 for images or the organ count in mask-input mode.
    dual: add the U-Net pixel decoder (`PixelDecoder`). Its organ masks are
      returned in aux, and the graph skips sample its `num_levels` finest
      feature maps instead of the encoder's deepest ones.
    shape_prior: decode displacements from a learned per-node shape instead of
      absolute positions (see `GraphDecoder`). A deviation from the published
      model that starts every contour as an ordered ring.
    mean_shape: initial per-node shape, `N0` pairs (x, y) normalised, usually
      the training split's mean contour (`mean_shape.mean_contour_shape`).
      Only read at initialisation; None starts every organ as a circle around
      the image centre (`decoder.default_shape`).
  """

  template: GraphTemplate
  block: str = "residual"
  filters: int = 16
  latent_dim: int = 64
  cheb_k: int = 6
  norm: str = "group"
  dtype: str = "float32"
  log_var_clip: float = 10.0
  propagation: str = "dense"
  input_channels: int = 1
  dual: bool = False
  shape_prior: bool = False
  mean_shape: tuple[tuple[float, float], ...] | None = None

  def __post_init__(self):
    _validate_options(self)
    super().__post_init__()

  @nn.compact
  def __call__(
      self, images: jax.Array, *, train: bool, sample_latent: bool | None = None
  ) -> tuple[jax.Array, dict[str, Any]]:
    """Predict node positions.

    Args:
      images: `[B, S, S, C]` float, S a power of two with at least
        `template.num_levels` encoder stages (S >= 2**(num_levels + 2)).
      train: training mode (batch statistics with norm="batch").
      sample_latent: sample z = mu + exp(log_var / 2) * eps with the "latent" rng
        collection; defaults to `train`. When False, z = mu.

    Returns:
      `(positions [B, N0, 2], aux)`: positions normalised to [0, 1] (not clipped);
      aux has "level_positions" (clipped skip positions `[B, n_level, 2]`, coarse to
      fine), "levels" (their levels, `num_levels - 1` down to 0), "mu" `[B, Z]` and
      "log_var" `[B, Z]` (clipped). The levels are Python ints inside the traced
      function but become arrays when aux is returned from `jax.jit`. A dual
      model adds "mask_logits" `[B, S, S, O]` and "masks" (their sigmoid), one
      channel per organ in template order.
    """
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
      raise ValueError(f"HybridGNet expects square images [B, S, S, C], got shape "
                       f"{images.shape}.")
    if images.shape[-1] != self.input_channels:
      raise ValueError(
          f"HybridGNet was built for {self.input_channels} input channel(s) but the images "
          f"have {images.shape[-1]} (shape {images.shape}); set input_channels to match.")
    check_input_size(images.shape[1], self.template.num_levels)
    if sample_latent is None:
      sample_latent = train

    encoded = Encoder(
        block=self.block, filters=self.filters, latent_dim=self.latent_dim, norm=self.norm,
        dtype=self.dtype, log_var_clip=self.log_var_clip, return_bottom=self.dual,
        name="encoder")(images, train=train)
    mu, log_var, features = encoded[:3]
    pixel_aux = {}
    if self.dual:
      logits, decoder_maps = PixelDecoder(
          num_organs=self.template.num_organs, block=self.block, norm=self.norm,
          dtype=self.dtype, name="pixel_decoder")(encoded[3], features, train=train)
      # The graph decoder samples the deepest `num_levels` maps it is given,
      # so passing the finest ones makes it sample those.
      features = decoder_maps[:self.template.num_levels]
      pixel_aux = {"mask_logits": logits, "masks": jax.nn.sigmoid(logits)}
    if sample_latent:
      noise = jax.random.normal(self.make_rng("latent"), mu.shape, mu.dtype)
      latent = mu + jnp.exp(0.5 * log_var) * noise
    else:
      latent = mu

    positions, level_positions, levels = GraphDecoder(
        template=self.template, cheb_k=self.cheb_k, propagation=self.propagation,
        shape_prior=self.shape_prior, mean_shape=self.mean_shape,
        name="decoder")(latent, features)
    aux = {
        "level_positions": level_positions,
        "levels": levels,
        "mu": mu,
        "log_var": log_var,
        **pixel_aux,
    }
    return positions, aux


def check_input_size(image_size: int, num_levels: int) -> None:
  """Raise ValueError unless the encoder at `image_size` has a stage for every level."""
  depth = encoder_depth(image_size)
  if depth < num_levels:
    raise ValueError(
        f"input size {image_size} gives an encoder with {depth} stage(s), but the graph "
        f"template has {num_levels} levels and each level samples one stage; use an input "
        f"size of at least {2**(num_levels + 2)} or fewer levels.")


def _validate_options(model: HybridGNet) -> None:
  choices = {"block": BLOCKS, "norm": NORMS, "dtype": DTYPES, "propagation": PROPAGATIONS}
  for field, valid in choices.items():
    value = getattr(model, field)
    if value not in valid:
      raise ValueError(f"model option {field}={value!r} is invalid; use one of {list(valid)}.")
  positive = {"filters": model.filters, "latent_dim": model.latent_dim,
              "cheb_k": model.cheb_k, "input_channels": model.input_channels}
  for field, value in positive.items():
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"model option {field}={value!r} must be a positive integer.")
  if model.block == "se_resnext" and model.filters < 16:
    raise ValueError(
        f"model option filters={model.filters} is too small for block='se_resnext', whose "
        "32-group bottleneck needs at least 16 filters; use filters >= 16 or "
        "block='residual'.")
  if not isinstance(model.dual, bool):
    raise ValueError(f"model option dual={model.dual!r} must be True or False.")
  if not model.log_var_clip > 0:
    raise ValueError(f"model option log_var_clip={model.log_var_clip!r} must be positive.")
  if not isinstance(model.template, GraphTemplate):
    raise TypeError(f"HybridGNet needs a GraphTemplate, got {type(model.template).__name__}.")


def build_model(model_config: Any, template: GraphTemplate,
                mean_shape: Any = None) -> HybridGNet:
  """Build a HybridGNet from a config whose fields are named like its arguments.

  Args:
    model_config: an `ml_collections.ConfigDict` (or any object with attributes)
      with the fields in `CONFIG_FIELDS`.
    template: the dataset's graph template.
    mean_shape: optional initial shape `[N0, 2]` for `shape_prior`; ignored when
      the config's `shape_prior` is False.

  Raises:
    ValueError: a field is missing or invalid.
  """
  missing = [f for f in CONFIG_FIELDS if not _has_field(model_config, f)]
  if missing:
    raise ValueError(
        f"model config is missing field(s) {missing}; it needs {list(CONFIG_FIELDS)}.")
  kwargs = {f: getattr(model_config, f) for f in CONFIG_FIELDS}
  for field, default in OPTIONAL_CONFIG_FIELDS.items():
    kwargs[field] = getattr(model_config, field) if _has_field(model_config, field) else default
  if mean_shape is not None and kwargs["shape_prior"]:
    # A tuple keeps the module hashable, so it can be a static jit argument.
    kwargs["mean_shape"] = tuple((float(x), float(y)) for x, y in mean_shape)
  return HybridGNet(template=template, **kwargs)


def _has_field(config: Any, field: str) -> bool:
  try:
    getattr(config, field)
  except (AttributeError, KeyError):
    return False
  return True
