"""Chebyshev graph convolution.

With the scaled Laplacian `L = -D^-1/2 A D^-1/2` (the symmetric normalised
Laplacian rescaled with lambda_max = 2), the recursion is

  T0 = X,  T1 = L X,  Tk = 2 L T(k-1) - T(k-2),  output = sum_k Tk Wk + b.

`L X` is computed either with a dense `[n, n]` matrix or by summing weighted
sender features at each receiver over an edge list. A node with degree 0 (for
example padding) has a zero row and column in L and no edges, so it never
changes the output of any other node.
"""

from __future__ import annotations

from typing import Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

PROPAGATIONS = ("dense", "segment_sum")

# The Laplacian operand of `ChebConv`: a dense float32 `[n, n]` matrix for
# propagation "dense", or a `jraph.GraphsTuple` whose `edges` hold the weight
# `L[receiver, sender]` of each edge `[E]` for propagation "segment_sum".
Laplacian = Union[jax.Array, jraph.GraphsTuple]


def propagate(x: jax.Array, laplacian: Laplacian, propagation: str) -> jax.Array:
  """Return `L x` for node features `x` `[B, n, F]`."""
  if propagation == "dense":
    if isinstance(laplacian, jraph.GraphsTuple):
      raise TypeError(
          'propagation "dense" needs the [n, n] Laplacian matrix, got a GraphsTuple; '
          "pass template.scaled_laplacian(level).")
    return jnp.einsum("ij,bjf->bif", laplacian.astype(x.dtype), x)
  if propagation == "segment_sum":
    if not isinstance(laplacian, jraph.GraphsTuple):
      raise TypeError(
          'propagation "segment_sum" needs a GraphsTuple with Laplacian edge weights, '
          "got an array; pass template.graph(level).")
    weights = jnp.asarray(laplacian.edges, x.dtype)
    messages = x[:, laplacian.senders, :] * weights[None, :, None]  # [B, E, F]
    # segment_sum reduces the leading axis, so edges go first.
    summed = jax.ops.segment_sum(
        jnp.moveaxis(messages, 1, 0), laplacian.receivers, num_segments=x.shape[1],
        indices_are_sorted=False)
    return jnp.moveaxis(summed, 0, 1)
  raise ValueError(f"propagation {propagation!r} is invalid; use one of {list(PROPAGATIONS)}.")


class ChebConv(nn.Module):
  """Chebyshev graph convolution of order `k` (k terms, T0 .. T(k-1)).

  Attributes:
    features: output features per node.
    k: number of Chebyshev terms (>= 1).
    use_bias: add a bias per output feature.
    propagation: "dense" (matrix product with the `[n, n]` Laplacian) or
      "segment_sum" (sum over an edge list); both give the same result.
  """

  features: int
  k: int = 6
  use_bias: bool = True
  propagation: str = "dense"

  @nn.compact
  def __call__(self, x: jax.Array, laplacian: Laplacian) -> jax.Array:
    """Apply the convolution.

    Args:
      x: node features `[B, n, F_in]`.
      laplacian: the scaled Laplacian of the graph, see `Laplacian`.

    Returns:
      `[B, n, features]`.
    """
    if self.k < 1:
      raise ValueError(f"ChebConv needs k >= 1 Chebyshev terms, got k={self.k}.")
    if x.ndim != 3:
      raise ValueError(f"ChebConv expects node features [B, n, F], got shape {x.shape}.")
    init = nn.initializers.normal(stddev=0.1)
    kernel = self.param("kernel", init, (self.k, x.shape[-1], self.features))

    terms = [x]
    if self.k > 1:
      terms.append(propagate(x, laplacian, self.propagation))
    for _ in range(2, self.k):
      terms.append(2.0 * propagate(terms[-1], laplacian, self.propagation) - terms[-2])
    stacked = jnp.stack(terms, axis=2)  # [B, n, k, F_in]
    out = jnp.einsum("bnkf,kfo->bno", stacked, kernel)
    if self.use_bias:
      out = out + self.param("bias", init, (self.features,))
    return out
