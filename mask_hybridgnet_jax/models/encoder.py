"""Variational CNN encoder: image -> latent mean and log-variance, plus skip maps.

The encoder has `L = min(log2(S) - 2, 5)` stages for an input of size S. Stage i
applies one block with `filters * 2**i` output channels, keeps that output for
the decoder's image-to-graph skips, then max-pools by 2. One more block with
`filters * 2**L` channels runs at the bottom, and two dense heads map its
flattened output to the mean and log-variance of the latent.

Normalisation is per sample by default (GroupNorm or instance norm), so a
prediction never depends on the other images in its batch. Deviation from the
published model, which uses batch statistics in training and inference:
`norm="batch"` reproduces it.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

BLOCKS = ("se_resnext", "residual")
NORMS = ("group", "instance", "batch")
DTYPES = ("float32", "bfloat16")
# Groups of the 3x3 convolution in the SE-ResNeXt block.
CARDINALITY = 32
# Channel reduction of the squeeze-and-excitation bottleneck.
SE_REDUCTION = 16
MAX_DEPTH = 5
NORM_EPSILON = 1e-5


def encoder_depth(image_size: int) -> int:
  """Return the number of stages `L = min(log2(S) - 2, 5)` for input size S.

  Raises:
    ValueError: S is not a power of two of at least 8 (one stage).
  """
  if (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8 or
      image_size & (image_size - 1)):
    raise ValueError(
        f"input size {image_size!r} is invalid; the encoder needs a power of two of at "
        "least 8 (for example 64, 256 or 512).")
  return min(int(math.log2(image_size)) - 2, MAX_DEPTH)


def group_norm_groups(channels: int) -> int:
  """Return the GroupNorm group count: the largest divisor of `channels` that is <= 32.

  For the encoder's power-of-two channel counts this is `min(32, channels)`.
  """
  for groups in range(min(32, channels), 0, -1):
    if channels % groups == 0:
      return groups
  raise ValueError(f"channels must be positive, got {channels}.")


def se_resnext_width(features: int) -> int:
  """Return the bottleneck width `int(features * 4 / 64) * 32` of an SE-ResNeXt block."""
  return int(features * 4 / 64) * CARDINALITY


class Norm(nn.Module):
  """Normalisation over channels of `[B, H, W, C]` maps.

  Attributes:
    kind: "group" (GroupNorm with `group_norm_groups(C)` groups), "instance"
      (one group per channel) or "batch" (BatchNorm with running averages used
      when not training).
    dtype: computation dtype; statistics are reduced in float32.
  """

  kind: str = "group"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    channels = x.shape[-1]
    if self.kind == "group":
      return nn.GroupNorm(
          num_groups=group_norm_groups(channels), epsilon=NORM_EPSILON, dtype=self.dtype)(x)
    if self.kind == "instance":
      return nn.GroupNorm(
          num_groups=None, group_size=1, epsilon=NORM_EPSILON, dtype=self.dtype)(x)
    if self.kind == "batch":
      # Momentum 0.9 keeps 90% of the running average per step. This matches the
      # default of PyTorch's BatchNorm2d, whose momentum=0.1 weights the new batch.
      return nn.BatchNorm(
          use_running_average=not train, momentum=0.9, epsilon=NORM_EPSILON,
          dtype=self.dtype)(x)
    raise ValueError(f"norm {self.kind!r} is invalid; use one of {list(NORMS)}.")


def _conv(features: int, kernel: int, dtype: Any, groups: int = 1, name: str | None = None):
  return nn.Conv(
      features, (kernel, kernel), padding="SAME", feature_group_count=groups,
      use_bias=False, dtype=dtype, name=name)


class _Shortcut(nn.Module):
  """Identity, or a 1x1 convolution and norm when the channel count changes."""

  features: int
  norm: str
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if x.shape[-1] == self.features:
      return x
    x = _conv(self.features, 1, self.dtype)(x)
    return Norm(self.norm, self.dtype)(x, train=train)


class SqueezeExcitation(nn.Module):
  """Channel gate: global mean -> Dense(C / 16) -> ReLU -> Dense(C) -> sigmoid."""

  reduction: int = SE_REDUCTION
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    gate = jnp.mean(x, axis=(1, 2))
    gate = nn.relu(nn.Dense(max(1, channels // self.reduction), dtype=self.dtype)(gate))
    gate = nn.sigmoid(nn.Dense(channels, dtype=self.dtype)(gate))
    return x * gate[:, None, None, :]


class SEResNeXtBlock(nn.Module):
  """SE-ResNeXt bottleneck block with 32 groups in its 3x3 convolution.

  1x1 conv to `se_resnext_width(features)` -> norm -> ReLU -> 3x3 grouped conv
  -> norm -> ReLU -> 1x1 conv to `features` -> norm -> squeeze-and-excitation
  -> add shortcut -> ReLU. Convolutions have no bias.

  Attributes:
    features: output channels (>= 16, so the bottleneck has at least 32 channels).
    norm: see `Norm`.
    dtype: computation dtype of convolutions and norms.
  """

  features: int
  norm: str = "group"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    width = se_resnext_width(self.features)
    if width == 0:
      raise ValueError(
          f"SEResNeXtBlock needs at least 16 output channels for a 32-group bottleneck, "
          f"got {self.features}; raise the encoder filters to 16 or more.")
    y = _conv(width, 1, self.dtype)(x)
    y = nn.relu(Norm(self.norm, self.dtype)(y, train=train))
    y = _conv(width, 3, self.dtype, groups=CARDINALITY)(y)
    y = nn.relu(Norm(self.norm, self.dtype)(y, train=train))
    y = _conv(self.features, 1, self.dtype)(y)
    y = Norm(self.norm, self.dtype)(y, train=train)
    y = SqueezeExcitation(dtype=self.dtype)(y)
    shortcut = _Shortcut(self.features, self.norm, self.dtype)(x, train=train)
    return nn.relu(y + shortcut)


class ResidualBlock(nn.Module):
  """Residual block with two dense 3x3 convolutions (the HybridGNet block).

  3x3 conv -> norm -> ReLU -> 3x3 conv -> norm -> add shortcut -> ReLU.
  Convolutions have no bias.

  Attributes:
    features: output channels.
    norm: see `Norm`.
    dtype: computation dtype of convolutions and norms.
  """

  features: int
  norm: str = "group"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = _conv(self.features, 3, self.dtype)(x)
    y = nn.relu(Norm(self.norm, self.dtype)(y, train=train))
    y = _conv(self.features, 3, self.dtype)(y)
    y = Norm(self.norm, self.dtype)(y, train=train)
    shortcut = _Shortcut(self.features, self.norm, self.dtype)(x, train=train)
    return nn.relu(y + shortcut)


class Encoder(nn.Module):
  """Variational encoder returning latent statistics and the pre-pool stage outputs.

  Attributes:
    block: "se_resnext" (grouped convolutions, fast on GPU and TPU) or
      "residual" (dense convolutions, fast on CPU).
    filters: channels of the first stage; stage i has `filters * 2**i`.
    latent_dim: size of the latent.
    norm: "group", "instance" or "batch", see `Norm`.
    dtype: "float32" or "bfloat16", the computation dtype of the convolutional
      trunk. Parameters stay float32, and the returned arrays and the dense
      heads are float32.
    log_var_clip: the log-variance is clipped to [-log_var_clip, 0] so that
      `exp` stays finite and the posterior is never wider than the N(0, 1)
      prior.
    return_bottom: also return the bottom block's output, the input of a
      pixel decoder.
  """

  block: str = "residual"
  filters: int = 16
  latent_dim: int = 64
  norm: str = "group"
  dtype: str = "float32"
  log_var_clip: float = 10.0
  return_bottom: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> tuple[Any, ...]:
    """Encode images.

    Args:
      images: `[B, S, S, C]` with S a power of two >= 8.
      train: use batch statistics (norm="batch" only).

    Returns:
      `(mu [B, Z], log_var [B, Z], features)`, with `features` the pre-pool output of
      each stage, shallow to deep: stage i is float32 `[B, S / 2**i, S / 2**i,
      filters * 2**i]`. `log_var` is already clipped. With `return_bottom`, a
      fourth element follows: the bottom block's output `[B, S / 2**L, S / 2**L,
      filters * 2**L]` in the computation dtype.
    """
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
      raise ValueError(f"Encoder expects square images [B, S, S, C], got shape {images.shape}.")
    if self.block not in BLOCKS:
      raise ValueError(f"encoder block {self.block!r} is invalid; use one of {list(BLOCKS)}.")
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype {self.dtype!r} is invalid; use one of {list(DTYPES)}.")
    block_class = SEResNeXtBlock if self.block == "se_resnext" else ResidualBlock
    compute_dtype = jnp.dtype(self.dtype)
    depth = encoder_depth(images.shape[1])

    x = images.astype(compute_dtype)
    features = []
    for stage in range(depth):
      x = block_class(self.filters * 2**stage, self.norm, compute_dtype,
                      name=f"stage{stage}")(x, train=train)
      features.append(x.astype(jnp.float32))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = block_class(self.filters * 2**depth, self.norm, compute_dtype, name="bottom")(
        x, train=train)

    flat = x.reshape(x.shape[0], -1).astype(jnp.float32)
    mu = nn.Dense(self.latent_dim, name="mean")(flat)
    log_var = nn.Dense(self.latent_dim, name="log_var")(flat)
    # Clipped before any exp, so the KL term and sampling stay finite. The
    # upper bound is the prior's log-variance: a standard deviation above 1
    # never lowers the KL term and only adds noise. Measured on Montgomery
    # with a symmetric bound of 10: Adam's updates of this 32,768-input head
    # random-walked half the dimensions to +10 within 500 steps, where the
    # clip's zero gradient kept them, and sampling noise (std 148) drowned
    # the mean (|mu| about 158), so inference with the mean failed.
    log_var = jnp.clip(log_var, -self.log_var_clip, 0.0)
    if self.return_bottom:
      return mu, log_var, tuple(features), x
    return mu, log_var, tuple(features)
