"""U-Net pixel decoder of the dual model: one sigmoid mask per organ.

Starting from the encoder's bottom block, each stage, deep to shallow, runs

  2x2 transposed conv (stride 2, half the channels) -> concat encoder skip
  -> encoder block (the encoder's block type)

so stage i works at the resolution of encoder stage i with `filters * 2**i`
channels. A 1x1 convolution after the finest stage gives one logit per organ.
The stage outputs are returned as well: in the dual model the graph decoder's
image-to-graph skips sample them instead of the encoder's outputs.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mask_hybridgnet_jax.models.encoder import ResidualBlock, SEResNeXtBlock


class PixelDecoder(nn.Module):
  """Encoder features -> organ mask logits and the decoder's feature maps.

  Attributes:
    num_organs: output channels, one per organ.
    block: "se_resnext" or "residual", as in the encoder.
    norm: see `encoder.Norm`.
    dtype: computation dtype of the convolutional stages, "float32" or
      "bfloat16". Logits and returned maps are float32.
  """

  num_organs: int
  block: str = "residual"
  norm: str = "group"
  dtype: str = "float32"

  @nn.compact
  def __call__(
      self, bottom: jax.Array, skips: tuple[jax.Array, ...], *, train: bool
  ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Decode to mask logits.

    Args:
      bottom: `[B, h, h, C]`, the encoder's bottom block output.
      skips: the encoder's pre-pool stage outputs, shallow to deep; stage i is
        `[B, 2**(L - i) h, 2**(L - i) h, C_i]` with L = len(skips).
      train: use batch statistics (norm="batch" only).

    Returns:
      `(logits [B, S, S, num_organs], feature_maps)`: float32 logits at the
      finest skip's resolution and the decoder's stage outputs, shallow to
      deep like `skips`, each float32 `[B, H_i, W_i, C_i]` with the shape of
      skip i.
    """
    block_class = SEResNeXtBlock if self.block == "se_resnext" else ResidualBlock
    compute_dtype = jnp.dtype(self.dtype)
    x = bottom.astype(compute_dtype)
    outputs: list[Any] = [None] * len(skips)
    for stage in range(len(skips) - 1, -1, -1):
      skip = skips[stage]
      channels = skip.shape[-1]
      x = nn.ConvTranspose(channels, (2, 2), strides=(2, 2), use_bias=False,
                           dtype=compute_dtype, name=f"up{stage}")(x)
      if x.shape[1:3] != skip.shape[1:3]:
        raise ValueError(
            f"pixel decoder stage {stage}: upsampled map {x.shape} does not match the "
            f"encoder skip {skip.shape}; the encoder must halve the size at each stage.")
      x = jnp.concatenate([x, skip.astype(compute_dtype)], axis=-1)
      x = block_class(channels, self.norm, compute_dtype, name=f"stage{stage}")(x, train=train)
      outputs[stage] = x.astype(jnp.float32)
    logits = nn.Conv(self.num_organs, (1, 1), dtype=jnp.float32, name="logits")(
        x.astype(jnp.float32))
    return logits, tuple(outputs)
