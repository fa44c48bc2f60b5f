"""KL divergence of the diagonal Gaussian latent from the standard normal."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mask_hybridgnet_jax.losses.chamfer import masked_mean_over_images

Array = jax.Array

# Log-variances are clipped to [-LOG_VAR_BOUND, LOG_VAR_BOUND] before exp.
# exp(30) = 1.1e13 stays far from float32 overflow (3.4e38), so the value and
# its gradient are finite for any finite input. The model already clips to a
# narrower range (10 by default), so this bound only guards other callers.
# Beyond it the gradient with respect to log_var is 0.
LOG_VAR_BOUND = 30.0


def kl_divergence(mu: Array, log_var: Array, valid: Array | None = None) -> Array:
  """Compute KL(N(mu, exp(log_var)) || N(0, 1)), averaged over dimensions and images.

  `-0.5 * mean(1 + log_var - mu^2 - exp(log_var))`.

  Args:
    mu: `[B, Z]` latent means.
    log_var: `[B, Z]` latent log-variances.
    valid: optional bool `[B]`; when given, only valid images are averaged.

  Returns:
    Scalar in nats per latent dimension.
  """
  log_var = jnp.clip(log_var, -LOG_VAR_BOUND, LOG_VAR_BOUND)
  per_dimension = -0.5 * (1.0 + log_var - mu * mu - jnp.exp(log_var))
  per_image = jnp.mean(per_dimension, axis=-1)
  if valid is None:
    return jnp.mean(per_image)
  return masked_mean_over_images(per_image, valid)
