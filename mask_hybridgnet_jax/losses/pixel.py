"""Dice and BCE of the dual model's pixel masks.

Each organ channel gets `1 - 2 sum(M Y) / (sum M + sum Y + 1e-6)` on the
sigmoid masks M and the binary cross-entropy computed from the logits, both
summed over the organs present and averaged over valid images.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from mask_hybridgnet_jax.losses.chamfer import masked_mean_over_images
from mask_hybridgnet_jax.losses.raster import dice_loss

Array = jax.Array


def bce_with_logits(logits: Array, target: Array) -> Array:
  """Return the binary cross-entropy of `sigmoid(logits)`, averaged over `[..., H, W]`.

  Uses `max(z, 0) - z y + log(1 + exp(-|z|))`, which stays finite and has a
  nonzero gradient for any logit, where the log of a saturated sigmoid would not.
  """
  per_pixel = (jnp.maximum(logits, 0.0) - logits * target
               + jnp.log1p(jnp.exp(-jnp.abs(logits))))
  return jnp.mean(per_pixel, axis=(-2, -1))


def pixel_mask_losses(logits: Array, batch: Mapping[str, Any]) -> dict[str, Array]:
  """Compute the Dice and BCE losses of the pixel decoder's masks.

  Args:
    logits: `[B, S, S, O]` mask logits, organs in template order.
    batch: needs `masks` float `[B, O, S, S]` in {0, 1}, `present` bool
      `[B, O]` and `valid` bool `[B]`.

  Returns:
    dict with scalar `dice` and `bce`.
  """
  masks = jnp.asarray(batch["masks"], logits.dtype)
  if masks.shape != (logits.shape[0], logits.shape[3], logits.shape[1], logits.shape[2]):
    raise ValueError(
        f"pixel decoder logits {logits.shape} [B, S, S, O] do not match batch['masks'] "
        f"{masks.shape} [B, O, S, S]; the dual model needs one mask channel per organ at "
        "the network input size.")
  present = jnp.asarray(batch["present"], bool)
  valid = jnp.asarray(batch["valid"], bool)
  logits = jnp.moveaxis(logits, -1, 1)  # [B, O, S, S]
  counted = present & valid[:, None]
  dice = jnp.where(counted, dice_loss(jax.nn.sigmoid(logits), masks), 0.0)
  bce = jnp.where(counted, bce_with_logits(logits, masks), 0.0)
  return {
      "dice": masked_mean_over_images(jnp.sum(dice, axis=1), valid),
      "bce": masked_mean_over_images(jnp.sum(bce, axis=1), valid),
  }
