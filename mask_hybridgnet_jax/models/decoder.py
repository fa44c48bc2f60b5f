"""Graph decoder: latent -> node positions, coarse to fine, with image-to-graph skips.

A dense layer maps the latent to 32 features on every node of the coarsest
graph. Each level, coarse to fine, runs

  Cheb -> norm -> ReLU -> Cheb -> norm -> ReLU -> image-to-graph skip -> upsample

(no upsampling after the finest level), and two more Chebyshev convolutions
turn the finest block's output into positions. The norm is a LayerNorm over each
node's features without scale or bias.

Channel plan (`decoder_widths`): widths `w_0 .. w_R` with `w_0 = 32` (the
latent's features per node) and `w_j = min(32, 8 * (R + 1 - j))` for j >= 1.
The block at the j-th level from the coarsest maps its input to `w_j` and
then to `w_(j+1)`. The output head maps to `w_R` and then to 2. For R = 3 this gives
32 -> 32 -> 24 at the quarter level, (24+2+skip) -> 24 -> 16 at the half
level, (16+2+skip) -> 16 -> 8 at full resolution, then (8+2+skip) -> 8 -> 2.
R = 2 gives widths (32, 16, 8) and R = 4 gives (32, 32, 24, 16, 8): the finest
levels always keep 24, 16 and 8 channels.

Image-to-graph skip: a per-node linear map predicts positions, clipped to
[0, 1] with a straight-through gradient; a 3x3 patch around each position is sampled bilinearly from one
encoder stage output and averaged. The deepest stage output serves the
coarsest level, the next deepest the next level, and so on.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from mask_hybridgnet_jax.models.chebconv import ChebConv, Laplacian
from mask_hybridgnet_jax.topology import GraphTemplate

# Features per node produced from the latent at the coarsest level.
LATENT_NODE_FEATURES = 32
NODE_NORM_EPSILON = 1e-5


def decoder_widths(num_levels: int) -> tuple[int, ...]:
  """Return the channel plan `(w_0, ..., w_R)` for R = `num_levels` (see module docstring)."""
  if num_levels < 1:
    raise ValueError(f"num_levels must be >= 1, got {num_levels}.")
  return (LATENT_NODE_FEATURES,) + tuple(
      min(32, 8 * (num_levels + 1 - j)) for j in range(1, num_levels + 1))


def bilinear_sample(feature_map: jax.Array, points: jax.Array) -> jax.Array:
  """Sample feature maps bilinearly at index coordinates; samples outside read 0.

  Each of the four neighbouring pixels contributes its bilinear weight when it
  lies inside the map and 0 otherwise, as if the map were padded with zeros.

  Args:
    feature_map: `[B, H, W, C]`.
    points: `[B, M, 2]` as (x, y) = (column, row) in pixel-index units: pixel
      (r, c) has its centre at (x, y) = (c, r).

  Returns:
    `[B, M, C]`, in the dtype of `feature_map`.
  """
  batch, height, width, channels = feature_map.shape
  flat = feature_map.reshape(batch, height * width, channels)
  x = points[..., 0]
  y = points[..., 1]
  x0 = jnp.floor(x)
  y0 = jnp.floor(y)
  # The weights depend on x - floor(x), so gradients reach the points through them.
  fx = x - x0
  fy = y - y0
  corners = (
      (x0, y0, (1.0 - fx) * (1.0 - fy)),
      (x0 + 1.0, y0, fx * (1.0 - fy)),
      (x0, y0 + 1.0, (1.0 - fx) * fy),
      (x0 + 1.0, y0 + 1.0, fx * fy),
  )
  gather = jax.vmap(lambda values, index: values[index])
  result = jnp.zeros((batch, points.shape[1], channels), feature_map.dtype)
  for cx, cy, weight in corners:
    inside = (cx >= 0) & (cx <= width - 1) & (cy >= 0) & (cy <= height - 1)
    # Clipping only keeps the gather in bounds; the mask zeroes those corners.
    index = (jnp.clip(cy, 0, height - 1) * width + jnp.clip(cx, 0, width - 1)).astype(jnp.int32)
    weight = jnp.where(inside, weight, 0.0).astype(feature_map.dtype)
    result = result + gather(flat, index) * weight[..., None]
  return result


def sample_patch_mean(feature_map: jax.Array, positions: jax.Array) -> jax.Array:
  """Average bilinear samples at the 3x3 points `p * size + {-1, 0, 1}` around each node.

  Args:
    feature_map: `[B, H, W, C]`.
    positions: `[B, n, 2]` normalised (x, y); x is scaled by W and y by H.

  Returns:
    `[B, n, C]`.
  """
  batch, height, width, channels = feature_map.shape
  num_nodes = positions.shape[1]
  centres = positions * jnp.array([width, height], positions.dtype)
  offsets = jnp.array([(dx, dy) for dy in (-1.0, 0.0, 1.0) for dx in (-1.0, 0.0, 1.0)],
                      positions.dtype)  # [9, 2]
  points = (centres[:, :, None, :] + offsets).reshape(batch, num_nodes * 9, 2)
  samples = bilinear_sample(feature_map, points).reshape(batch, num_nodes, 9, channels)
  return jnp.mean(samples, axis=2)


# Radius of the circles that start each organ when no mean shape is given,
# in normalised units (a quarter of the image side).
DEFAULT_SHAPE_RADIUS = 0.25


def default_shape(template: GraphTemplate) -> np.ndarray:
  """Return every organ's ring as a circle around the image centre, `[N0, 2]`.

  Nodes run at equal angles from the top of the circle, in the orientation of
  traced contours (positive signed area in image coordinates), so every ring
  starts ordered even without a mean contour.
  """
  shape = np.full((template.num_nodes(0), 2), 0.5, np.float32)
  for index in template.organ_indices(0):
    nodes = np.arange(template.num_nodes(0))[index]
    angle = 2.0 * np.pi * np.arange(len(nodes)) / len(nodes)
    # Start at the top (smallest y) and turn towards +x: positive signed area.
    shape[nodes, 0] = 0.5 + DEFAULT_SHAPE_RADIUS * np.sin(angle)
    shape[nodes, 1] = 0.5 - DEFAULT_SHAPE_RADIUS * np.cos(angle)
  return shape


class ImageToGraphSkip(nn.Module):
  """Predict node positions and append image features sampled there.

  Returns `(concat[features, positions, sampled] [B, n, F + 2 + C], positions [B, n, 2])`
  with positions normalised and clipped to [0, 1]. With `offset` `[n, 2]` the
  linear map predicts displacements from those positions.
  """

  @nn.compact
  def __call__(self, features: jax.Array, feature_map: jax.Array,
               offset: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    raw = nn.Dense(2, use_bias=False, name="positions")(features)
    if offset is not None:
      raw = raw + offset
    # Straight-through clip: the value is clipped to [0, 1], the gradient is
    # the identity. A plain clip has zero gradient outside the range, so a
    # skip whose nodes start outside the image could never move them back.
    positions = raw + jax.lax.stop_gradient(jnp.clip(raw, 0.0, 1.0) - raw)
    sampled = sample_patch_mean(feature_map, positions)
    return jnp.concatenate([features, positions, sampled], axis=-1), positions


def _node_norm(x: jax.Array) -> jax.Array:
  return nn.LayerNorm(epsilon=NODE_NORM_EPSILON, use_scale=False, use_bias=False)(x)


class GraphDecoder(nn.Module):
  """Chebyshev graph decoder with image-to-graph skips and deep supervision.

  Attributes:
    template: the contour graphs; its `num_levels` sets the number of blocks.
    cheb_k: Chebyshev terms per convolution.
    propagation: "dense" or "segment_sum", see `ChebConv`.
    shape_prior: predict every position as a displacement from a learned
      per-node shape (parameter "shape_prior" `[N0, 2]`, normalised), averaged
      down to the coarser levels with the template's downsampling.
    mean_shape: initial value of that shape, `N0` pairs (x, y) normalised;
      `default_shape(template)` when None. Used only at initialisation.
  """

  template: GraphTemplate
  cheb_k: int = 6
  propagation: str = "dense"
  shape_prior: bool = False
  mean_shape: tuple[tuple[float, float], ...] | None = None

  def _laplacian(self, level: int) -> Laplacian:
    if self.propagation == "segment_sum":
      graph = self.template.graph(level)
      return jraph.GraphsTuple(
          nodes=None, edges=jnp.asarray(graph.edges), senders=jnp.asarray(graph.senders),
          receivers=jnp.asarray(graph.receivers), n_node=jnp.asarray(graph.n_node),
          n_edge=jnp.asarray(graph.n_edge), globals=None)
    return jnp.asarray(self.template.scaled_laplacian(level))

  @nn.compact
  def __call__(
      self, latent: jax.Array, feature_maps: tuple[jax.Array, ...]
  ) -> tuple[jax.Array, tuple[jax.Array, ...], tuple[int, ...]]:
    """Decode a latent into node positions.

    Args:
      latent: `[B, Z]`.
      feature_maps: encoder stage outputs, shallow to deep, each `[B, H_i, W_i, C_i]`;
        the deepest `num_levels` of them are sampled.

    Returns:
      `(positions [B, N0, 2], level_positions, levels)`: final normalised positions
      (not clipped), the clipped skip positions of each level `[B, n_level, 2]`,
      coarse to fine, and those levels (`num_levels - 1` down to 0).
    """
    num_levels = self.template.num_levels
    if len(feature_maps) < num_levels:
      raise ValueError(
          f"the graph decoder has {num_levels} levels and samples one encoder stage per "
          f"level, but the encoder has {len(feature_maps)} stages; use a larger input "
          f"size (at least {2**(num_levels + 2)}) or fewer levels.")
    widths = decoder_widths(num_levels)
    # Deepest stage first, matching the coarse-to-fine order of the levels.
    skip_maps = tuple(reversed(feature_maps[len(feature_maps) - num_levels:]))
    coarsest = num_levels - 1
    num_coarse = self.template.num_nodes(coarsest)

    h = nn.Dense(LATENT_NODE_FEATURES * num_coarse,
                 kernel_init=nn.initializers.normal(stddev=0.5), name="latent_to_nodes")(latent)
    h = nn.relu(h).reshape(latent.shape[0], num_coarse, LATENT_NODE_FEATURES)

    offsets = self._level_shapes() if self.shape_prior else None
    level_positions = []
    levels = []
    for j, level in enumerate(range(coarsest, -1, -1)):
      laplacian = self._laplacian(level)
      for i, width in enumerate((widths[j], widths[j + 1])):
        h = ChebConv(width, self.cheb_k, propagation=self.propagation,
                     name=f"level{level}_cheb{i}")(h, laplacian)
        h = nn.relu(_node_norm(h))
      h, positions = ImageToGraphSkip(name=f"level{level}_skip")(
          h, skip_maps[j], None if offsets is None else offsets[level])
      level_positions.append(positions)
      levels.append(level)
      if level > 0:
        h = jnp.einsum("nm,bmf->bnf", jnp.asarray(self.template.upsample(level - 1)), h)

    laplacian = self._laplacian(0)
    h = ChebConv(widths[-1], self.cheb_k, propagation=self.propagation, name="head_cheb0")(
        h, laplacian)
    h = nn.relu(_node_norm(h))
    positions = ChebConv(2, self.cheb_k, use_bias=False, propagation=self.propagation,
                         name="head_cheb1")(h, laplacian)
    if offsets is not None:
      positions = positions + offsets[0]
    return positions, tuple(level_positions), tuple(levels)

  def _level_shapes(self) -> list[jax.Array]:
    """Return the learned shape at every level, finest first: `[n_level, 2]` each."""
    num_nodes = self.template.num_nodes(0)
    if self.mean_shape is None:
      circles = jnp.asarray(default_shape(self.template))
      init = lambda rng, shape, dtype=jnp.float32: circles.astype(dtype)
    else:
      if len(self.mean_shape) != num_nodes:
        raise ValueError(
            f"mean_shape has {len(self.mean_shape)} nodes but the template has {num_nodes}; "
            "compute it from the same dataset as the template.")
      init = lambda rng, shape, dtype=jnp.float32: jnp.asarray(self.mean_shape, dtype)
    shapes = [self.param("shape_prior", init, (num_nodes, 2), jnp.float32)]
    for level in range(self.template.num_levels - 1):
      shapes.append(jnp.asarray(self.template.downsample(level)) @ shapes[-1])
    return shapes
