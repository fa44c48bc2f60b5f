"""Differentiable polygon rasterisation with Dice and BCE against target masks.

For pixel centre p (pixel k has its centre at coordinate k, points are (x, y) =
(column, row)) and a closed polygon,

  d2(p)   = min over segments [a, b] of |p - (a + t (b - a))|^2, with
            t = clip((p - a).(b - a) / (|b - a|^2 + 1e-5), 0, 1),
  s(p)    = +1 when p is inside by the even-odd rule, else -1 (a constant),
  mask(p) = sigmoid(s(p) * d2(p) / tau),

in pixel units, tau in px^2. The mask is 0.5 on the polygon and tends to 1
inside and to 0 outside. The 1e-5 px^2 keeps t finite for zero-length
segments. The even-odd rule makes the result independent of the vertex
orientation.

`soft_rasterize` keeps peak memory proportional to H * W, whatever the number
of segments. A pass without gradient walks the segments in chunks and keeps,
for every pixel, the running minimum, the index of the segment that attains
it and the parity of the edge crossings. Then only that one segment's
distance is recomputed and differentiated. The gradient of the min over segments is the
gradient through its minimiser, so the result and its gradient match those of
`soft_rasterize_dense`, the straightforward version that materialises all
`[N, H, W]` distances (kept as a test oracle and for benchmarks), up to float
rounding. The one difference: at a pixel equidistant from two segments the
dense version splits the gradient between them, this one gives it all to the
lower segment index.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from mask_hybridgnet_jax.losses.chamfer import masked_mean_over_images

Array = jax.Array

# Supported temperatures, px^2. Below the minimum the sigmoid goes from 0.5 to
# saturation within sqrt(1e-3) = 0.03 px of the edge, so pixel centres get no
# gradient (it underflows to 0). Above the maximum the mask blurs over several
# pixels (sigmoid(9 / 10) = 0.71 at 3 px from the edge) and stops resembling
# the hard mask it is compared with.
TAU_MIN = 1e-3
TAU_MAX = 10.0
DEFAULT_TAU = 0.1
# Added to squared segment lengths (px^2) so that duplicate vertices give a
# finite projection parameter.
SEGMENT_LENGTH_EPS = 1e-5
# Segments per step of the nearest-segment scan. A step compares them one after
# the other, unrolled, so a larger chunk compiles longer.
DEFAULT_CHUNK_SIZE = 16
# Probabilities are clipped below at the smallest normal float32 (log >= -87.3)
# before the logarithm in BCE. PyTorch's BCELoss clamps the log at -100,
# which float32 cannot reach without denormals.
_PROBABILITY_FLOOR = float(jnp.finfo(jnp.float32).tiny)
_DICE_EPS = 1e-6


class InvalidTauError(ValueError):
  """A rasterisation temperature outside the supported range."""


def validate_tau(tau: Any) -> float:
  """Return `tau` as a float, or raise InvalidTauError when it is unusable.

  Args:
    tau: temperature in px^2; valid range [TAU_MIN, TAU_MAX] = [1e-3, 10].
  """
  if isinstance(tau, bool) or not isinstance(tau, (int, float)):
    raise InvalidTauError(
        f"tau = {tau!r}: expected a number of px^2 in [{TAU_MIN}, {TAU_MAX}], "
        f"for example {DEFAULT_TAU}.")
  tau = float(tau)
  if not math.isfinite(tau) or not TAU_MIN <= tau <= TAU_MAX:
    raise InvalidTauError(
        f"tau = {tau!r} px^2 is outside the supported range [{TAU_MIN}, {TAU_MAX}] "
        f"px^2. Below {TAU_MIN} the soft mask saturates within "
        f"{math.sqrt(TAU_MIN):.2f} px of the polygon, so almost no pixel gets a "
        f"gradient; above {TAU_MAX} it blurs over several pixels. The reference "
        f"value is {DEFAULT_TAU}.")
  return tau


def _pixel_centres(height: int, width: int, dtype: Any) -> tuple[Array, Array]:
  """Return `[H, W]` x (column) and y (row) coordinates of the pixel centres."""
  y, x = jnp.meshgrid(
      jnp.arange(height, dtype=dtype), jnp.arange(width, dtype=dtype), indexing="ij")
  return x, y


def _segment_squared_distance(
    px: Array, py: Array, ax: Array, ay: Array, bx: Array, by: Array
) -> Array:
  """Squared distance from points p to segments [a, b]; arguments broadcast.

  The endpoints are put in a canonical order first (lexicographically smaller
  one first), so a segment and its reverse give bit-identical distances and
  clockwise and counter-clockwise polygons give identical masks.
  """
  swap = (bx < ax) | ((bx == ax) & (by < ay))
  ax, bx = jnp.where(swap, bx, ax), jnp.where(swap, ax, bx)
  ay, by = jnp.where(swap, by, ay), jnp.where(swap, ay, by)
  dx = bx - ax
  dy = by - ay
  # The offset to the closest point is formed as t (b - a) - (p - a). Its terms
  # are segment-sized, so it loses less precision to cancellation than
  # a + t (b - a) - p, whose terms are image-sized.
  ux = px - ax
  uy = py - ay
  t = (ux * dx + uy * dy) / (dx * dx + dy * dy + SEGMENT_LENGTH_EPS)
  t = jnp.clip(t, 0.0, 1.0)
  qx = t * dx - ux
  qy = t * dy - uy
  return qx * qx + qy * qy


def _ray_crosses(
    px: Array, py: Array, ax: Array, ay: Array, bx: Array, by: Array
) -> Array:
  """Return whether the ray from p towards +x crosses segment [a, b].

  Half-open in y, (a_y > p_y) != (b_y > p_y), so a ray through a shared
  vertex counts exactly one of its two segments and horizontal segments none.
  """
  straddles = (ay > py) != (by > py)
  # The denominator is only used where the segment straddles the ray, which
  # implies a_y != b_y. Elsewhere it is replaced by 1 to keep the pass NaN-free.
  dy = jnp.where(straddles, by - ay, 1.0)
  x_crossing = ax + (py - ay) * (bx - ax) / dy
  return straddles & (px < x_crossing)


def nearest_segments(
    polygon: Array, height: int, width: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[Array, Array]:
  """Find each pixel's nearest segment and its even-odd inside flag, without gradient.

  Segment i joins vertex i to vertex (i + 1) mod N. Ties keep the lowest index.

  Args:
    polygon: `[N, 2]` vertices in pixel units, N >= 1.
    height, width: output size in pixels.
    chunk_size: segments per scan step, compared one after the other. The
      intermediates are `[H, W]`.

  Returns:
    (`[H, W]` int32 nearest segment index, `[H, W]` bool inside flag).
  """
  polygon = jnp.asarray(polygon)
  if polygon.ndim != 2 or polygon.shape[0] < 1 or polygon.shape[1] != 2:
    raise ValueError(f"polygon has shape {polygon.shape}, expected [N, 2] with N >= 1.")
  if chunk_size < 1:
    raise ValueError(f"chunk_size = {chunk_size!r}, expected a positive integer.")
  polygon = jax.lax.stop_gradient(polygon)
  num_segments = polygon.shape[0]
  chunk_size = min(chunk_size, num_segments)
  num_chunks = -(-num_segments // chunk_size)
  extra = num_chunks * chunk_size - num_segments

  starts = jnp.pad(polygon, ((0, extra), (0, 0)))
  ends = jnp.pad(jnp.roll(polygon, -1, axis=0), ((0, extra), (0, 0)))
  indices = jnp.arange(num_chunks * chunk_size, dtype=jnp.int32)
  chunks = (
      starts.reshape(num_chunks, chunk_size, 1, 1, 2),
      ends.reshape(num_chunks, chunk_size, 1, 1, 2),
      indices.reshape(num_chunks, chunk_size),
  )
  px, py = _pixel_centres(height, width, polygon.dtype)

  def step(carry, chunk):
    best_d2, best_index, inside = carry
    a, b, chunk_indices = chunk
    # One segment at a time, so every update is elementwise over [H, W] and
    # fuses into one loop. An argmin over [C, H, W] was much slower on CPU
    # (docs/benchmarks.md, "Soft rasteriser").
    for c in range(chunk_size):
      real = chunk_indices[c] < num_segments  # padded segments: False
      ax, ay, bx, by = a[c, ..., 0], a[c, ..., 1], b[c, ..., 0], b[c, ..., 1]
      d2 = jnp.where(real, _segment_squared_distance(px, py, ax, ay, bx, by), jnp.inf)
      # Strict comparison: on a tie the earlier segment keeps the pixel.
      closer = d2 < best_d2
      best_d2 = jnp.where(closer, d2, best_d2)
      best_index = jnp.where(closer, chunk_indices[c], best_index)
      inside = inside ^ (_ray_crosses(px, py, ax, ay, bx, by) & real)
    return (best_d2, best_index, inside), None

  init = (
      jnp.full((height, width), jnp.inf, polygon.dtype),
      jnp.zeros((height, width), jnp.int32),
      jnp.zeros((height, width), bool),
  )
  (_, best_index, inside), _ = jax.lax.scan(step, init, chunks)
  return best_index, inside


def soft_rasterize(
    polygon: Array,
    height: int,
    width: int,
    tau: float | Array = DEFAULT_TAU,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Array:
  """Rasterise a closed polygon into a soft mask with peak memory O(H * W).

  Temporary buffers reported by `memory_analysis()` of the compiled gradient
  of `sum(mask)` at 256 x 256 (XLA:CPU, jax 0.10.2): 5.4 MiB at both 64 and
  512 vertices, against 177 MiB and 1409 MiB for `soft_rasterize_dense`.

  Args:
    polygon: `[N, 2]` vertices (x, y) in pixel units, N >= 1, either
      orientation; duplicates, collapsed polygons and vertices outside the
      image are fine.
    height, width: output size in pixels.
    tau: temperature in px^2. A Python number is checked with `validate_tau`;
      a traced value cannot be and is used as given.
    chunk_size: segments examined per step of the nearest-segment pass.

  Returns:
    `[H, W]` soft mask in [0, 1], differentiable with respect to `polygon`.
  """
  if isinstance(tau, (int, float)):
    tau = validate_tau(tau)
  polygon = jnp.asarray(polygon)
  index, inside = nearest_segments(polygon, height, width, chunk_size=chunk_size)
  following = (index + 1) % polygon.shape[0]
  a = polygon[index]  # [H, W, 2]
  b = polygon[following]
  px, py = _pixel_centres(height, width, polygon.dtype)
  d2 = _segment_squared_distance(px, py, a[..., 0], a[..., 1], b[..., 0], b[..., 1])
  sign = jnp.where(inside, 1.0, -1.0).astype(polygon.dtype)
  return jax.nn.sigmoid(sign * d2 / tau)


def soft_rasterize_dense(
    polygon: Array, height: int, width: int, tau: float | Array = DEFAULT_TAU
) -> Array:
  """Rasterise like `soft_rasterize`, materialising all `[N, H, W]` distances.

  Memory grows with the number of segments; this is the reference the
  chunked version is tested against and benchmarked with.
  """
  if isinstance(tau, (int, float)):
    tau = validate_tau(tau)
  polygon = jnp.asarray(polygon)
  px, py = _pixel_centres(height, width, polygon.dtype)
  a = polygon[:, None, None, :]
  b = jnp.roll(polygon, -1, axis=0)[:, None, None, :]
  ax, ay, bx, by = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
  d2 = jnp.min(_segment_squared_distance(px, py, ax, ay, bx, by), axis=0)
  crossings = jnp.sum(_ray_crosses(px, py, ax, ay, bx, by), axis=0)
  inside = jax.lax.stop_gradient(crossings % 2 == 1)
  sign = jnp.where(inside, 1.0, -1.0).astype(polygon.dtype)
  return jax.nn.sigmoid(sign * d2 / tau)


def dice_loss(soft: Array, target: Array) -> Array:
  """Return `1 - 2 sum(M Y) / (sum M + sum Y + 1e-6)` over `[..., H, W]`."""
  intersection = jnp.sum(soft * target, axis=(-2, -1))
  total = jnp.sum(soft, axis=(-2, -1)) + jnp.sum(target, axis=(-2, -1))
  return 1.0 - 2.0 * intersection / (total + _DICE_EPS)


def bce_loss(soft: Array, target: Array) -> Array:
  """Return the binary cross-entropy averaged over `[..., H, W]`.

  Probabilities below the smallest normal float32 are clipped before the log,
  so a saturated wrong pixel costs at most 87.3 and passes no gradient.
  """
  log_p = jnp.log(jnp.maximum(soft, _PROBABILITY_FLOOR))
  log_not_p = jnp.log(jnp.maximum(1.0 - soft, _PROBABILITY_FLOOR))
  per_pixel = -(target * log_p + (1.0 - target) * log_not_p)
  return jnp.mean(per_pixel, axis=(-2, -1))


def raster_losses(
    positions: Array,
    batch: Mapping[str, Any],
    template: Any,
    tau: float = DEFAULT_TAU,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, Array]:
  """Compute the Dice and BCE losses of the rasterised contours.

  Each is summed over the organs present and averaged over valid images.

  Args:
    positions: `[B, n0, 2]` final nodes in normalised coordinates.
    batch: needs `masks` float `[B, O, S, S]` in {0, 1}, `present` bool
      `[B, O]` and `valid` bool `[B]`.
    template: the `GraphTemplate`; only `organ_indices(0)` is used.
    tau: temperature in px^2 of the S x S network input.
    chunk_size: see `nearest_segments`.

  Returns:
    dict with scalar `dice` and `bce`.
  """
  masks = jnp.asarray(batch["masks"])
  present = jnp.asarray(batch["present"], bool)
  valid = jnp.asarray(batch["valid"], bool)
  height, width = masks.shape[-2:]
  if height != width:
    raise ValueError(
        f"batch['masks'] is {height} x {width} pixels; the network input must be "
        "square, because normalised coordinates are scaled by one size.")
  slices = template.organ_indices(0)
  if masks.shape[1] != len(slices):
    raise ValueError(
        f"batch['masks'] has {masks.shape[1]} organs but the graph template has "
        f"{len(slices)} ({', '.join(template.organ_names)}).")

  # Normalised coordinates times the input size S are pixel coordinates.
  pixels = positions * width
  rasterize = jax.vmap(
      lambda polygon: soft_rasterize(polygon, height, width, tau, chunk_size=chunk_size))
  counted = present & valid[:, None]
  dice_per_image = jnp.zeros(positions.shape[:1], positions.dtype)
  bce_per_image = jnp.zeros(positions.shape[:1], positions.dtype)
  for organ, organ_index in enumerate(slices):
    soft = rasterize(pixels[:, organ_index])  # [B, S, S]
    target = masks[:, organ]
    dice_per_image += jnp.where(counted[:, organ], dice_loss(soft, target), 0.0)
    bce_per_image += jnp.where(counted[:, organ], bce_loss(soft, target), 0.0)
  return {
      "dice": masked_mean_over_images(dice_per_image, valid),
      "bce": masked_mean_over_images(bce_per_image, valid),
  }


def raster_loss(
    positions: Array,
    batch: Mapping[str, Any],
    template: Any,
    tau: float = DEFAULT_TAU,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Array:
  """Return Dice + BCE of `raster_losses` (each with weight 1) as one scalar."""
  losses = raster_losses(positions, batch, template, tau, chunk_size=chunk_size)
  return losses["dice"] + losses["bce"]
