"""Jittable data augmentation: one random draw moves image, masks and points.

Each example gets its own random 2x3 affine map about the image centre
(independent x and y scales, a rotation, and the flips and transpose that the
dataset allows) followed by a gamma change and Gaussian noise on the image. The
same affine map resamples the image (bilinear, zeros outside), the organ masks
(bilinear, then thresholded at 0.5 so they stay binary) and moves the boundary
points, so targets stay aligned with the image.

Coordinates follow the package convention: points are (x, y) = (column, row),
pixel k has its centre at k, and normalised coordinates are pixels / S. An
affine matrix `M` [2, 3] maps a normalised input point p to
`M[:, :2] @ p + M[:, 2]`.

"The reference code" below is the published PyTorch implementation of
Mask-HybridGNet (Gaggion et al., 2026), file `data/transforms.py`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
from jax.scipy import ndimage

# Distance in pixels that the bounded draw keeps between organ points and the
# outermost pixel centres.
_BORDER_MARGIN_PX = 1e-3

# Per-example fields that augmentation changes or needs; all others pass through.
_EXAMPLE_KEYS = ("image", "masks", "points", "lengths", "present")


def default_augment_config() -> ml_collections.ConfigDict:
  """Return the augmentation settings of the published method.

  Fields:
    enabled: False returns batches unchanged.
    scale_min, scale_max: bounds of the uniform x and y scale factors.
    rotation_std_deg: standard deviation of the normal rotation angle, degrees.
    gamma_min, gamma_max: bounds of the uniform gamma.
    noise_std: standard deviation of additive Gaussian noise (image in [0, 1]).
  """
  config = ml_collections.ConfigDict()
  config.enabled = True
  config.scale_min = 0.7
  config.scale_max = 1.2
  config.rotation_std_deg = 15.0
  config.gamma_min = 0.6
  config.gamma_max = 1.2
  config.noise_std = 1.0 / 128.0
  return config


def validate_augment_config(config: Any) -> None:
  """Raise ValueError when a field of the augmentation config is out of range."""
  if not 0.0 < config.scale_min <= config.scale_max:
    raise ValueError(
        f"augment: need 0 < scale_min <= scale_max, got scale_min={config.scale_min}, "
        f"scale_max={config.scale_max}.")
  if not 0.0 < config.gamma_min <= config.gamma_max:
    raise ValueError(
        f"augment: need 0 < gamma_min <= gamma_max, got gamma_min={config.gamma_min}, "
        f"gamma_max={config.gamma_max}.")
  if config.rotation_std_deg < 0.0:
    raise ValueError(
        f"augment: rotation_std_deg must be >= 0, got {config.rotation_std_deg}.")
  if config.noise_std < 0.0:
    raise ValueError(f"augment: noise_std must be >= 0, got {config.noise_std}.")


def image_centre(size: int) -> float:
  """Return the normalised coordinate of the image centre, (S - 1) / (2 S).

  Pixel centres run from 0 to S - 1 pixels, so a flip about this point maps
  pixel k exactly to pixel S - 1 - k.
  """
  return (size - 1) / (2 * size)


def affine_about_centre(linear: jax.Array, size: int) -> jax.Array:
  """Return the [2, 3] affine map that applies `linear` [2, 2] about the centre."""
  centre = jnp.full((2,), image_centre(size), dtype=jnp.float32)
  translation = centre - linear @ centre
  return jnp.concatenate([linear, translation[:, None]], axis=1)


def _random_reflection(
    rng: jax.Array,
    *,
    allow_horizontal_flip: bool,
    allow_vertical_flip: bool,
    allow_transpose: bool,
) -> jax.Array:
  """Draw each allowed flip with probability 1/2 and return their product [2, 2]."""
  key_transpose, key_horizontal, key_vertical = jax.random.split(rng, 3)
  reflection = jnp.eye(2, dtype=jnp.float32)
  # A flip that is not allowed is never drawn, so its probability is exactly 0.
  if allow_transpose:
    swap = jnp.array([[0.0, 1.0], [1.0, 0.0]], dtype=jnp.float32)
    reflection = jnp.where(jax.random.bernoulli(key_transpose), swap @ reflection, reflection)
  if allow_horizontal_flip:
    mirror_x = jnp.diag(jnp.array([-1.0, 1.0], dtype=jnp.float32))
    reflection = jnp.where(
        jax.random.bernoulli(key_horizontal), mirror_x @ reflection, reflection)
  if allow_vertical_flip:
    mirror_y = jnp.diag(jnp.array([1.0, -1.0], dtype=jnp.float32))
    reflection = jnp.where(
        jax.random.bernoulli(key_vertical), mirror_y @ reflection, reflection)
  return reflection


def _valid_point_mask(points: jax.Array, lengths: jax.Array, present: jax.Array) -> jax.Array:
  """Return bool [O, P]: rows before each organ's length, for present organs only."""
  rows = jnp.arange(points.shape[1])
  return (rows[None, :] < lengths[:, None]) & present[:, None]


def largest_safe_blend(
    start: jax.Array,
    offset: jax.Array,
    valid: jax.Array,
    lower: float,
    upper: float,
) -> jax.Array:
  """Return the largest t in [0, 1] with `lower <= start + t * offset <= upper`.

  The condition is checked for every coordinate of every valid point, in closed
  form: a coordinate moving up (offset > 0) allows t <= (upper - start) / offset
  and one moving down allows t <= (lower - start) / offset. Invalid points and
  coordinates that do not move impose nothing. A start already outside the
  range gives t = 0.

  Args:
    start: [O, P, 2] points at t = 0.
    offset: [O, P, 2] displacement at t = 1.
    valid: bool [O, P] points that must stay inside.
    lower: lowest allowed coordinate.
    upper: highest allowed coordinate.

  Returns:
    Scalar float32 t.
  """
  moving_up = offset > 0.0
  moving_down = offset < 0.0
  # Denominator 1 where nothing moves, so no division by zero reaches jnp.where.
  safe_offset = jnp.where(moving_up | moving_down, offset, 1.0)
  bound = jnp.where(
      moving_up, (upper - start) / safe_offset,
      jnp.where(moving_down, (lower - start) / safe_offset, jnp.inf))
  bound = jnp.where(valid[..., None], bound, jnp.inf)
  return jnp.clip(jnp.min(bound), 0.0, 1.0)


def random_affine(
    rng: jax.Array,
    points: jax.Array,
    lengths: jax.Array,
    present: jax.Array,
    size: int,
    config: Any,
    *,
    allow_horizontal_flip: bool,
    allow_vertical_flip: bool,
    allow_transpose: bool,
) -> jax.Array:
  """Draw one affine map [2, 3] that keeps the organ points inside the image.

  The map is `R @ D` (the rotation R of an angle drawn from N(0, std) after the
  scale D = diag(sx, sy), each factor uniform in [scale_min, scale_max]) after
  the flips F, all about the image centre. A positive angle turns the x axis
  towards the y axis, which is clockwise on screen because y points down.

  Bounding: the points of present organs (rows before their length) must stay
  within the range of pixel centres, [0, (S - 1) / S] in normalised units. The
  flips keep them there, so only `A = R @ D` can push them out. The map uses
  `A_t = (1 - t) I + t A` with the largest t in [0, 1] that keeps every point
  at least 1e-3 pixels inside that range, or t = 0 (flips only) when a point
  already closer to the border would move outwards. Each transformed point is
  linear in t, so t has a closed form (`largest_safe_blend`). When the whole
  draw fits, t = 1 and the draw is used unchanged.
  NOTE: this differs from the reference code, which caps only the upward scale
  per axis and leaves rotation unbounded. Here an organ near the border gets
  its scale and rotation pulled towards 1 and 0 together.

  Args:
    rng: PRNG key.
    points: [O, P, 2] normalised boundary points.
    lengths: int32 [O] valid rows of each organ.
    present: bool [O].
    size: S, the image side in pixels.
    config: augmentation config (see `default_augment_config`).
    allow_horizontal_flip: draw left/right mirroring with probability 1/2.
    allow_vertical_flip: draw top/bottom mirroring with probability 1/2.
    allow_transpose: draw a row/column swap with probability 1/2.

  Returns:
    float32 [2, 3] affine map in normalised coordinates.
  """
  key_sx, key_sy, key_angle, key_flip = jax.random.split(rng, 4)
  scale_x = jax.random.uniform(key_sx, minval=config.scale_min, maxval=config.scale_max)
  scale_y = jax.random.uniform(key_sy, minval=config.scale_min, maxval=config.scale_max)
  angle = jax.random.normal(key_angle) * math.radians(config.rotation_std_deg)
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  rotation = jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])])
  draw = rotation @ jnp.diag(jnp.stack([scale_x, scale_y]))
  reflection = _random_reflection(
      key_flip,
      allow_horizontal_flip=allow_horizontal_flip,
      allow_vertical_flip=allow_vertical_flip,
      allow_transpose=allow_transpose)

  identity = jnp.eye(2, dtype=jnp.float32)
  centre = image_centre(size)
  reflected = centre + (points - centre) @ reflection.T
  offset = (reflected - centre) @ (draw - identity).T
  # Float32 rounding of the composed map moves points by about 1e-7, so the
  # bound keeps a margin of 1e-3 pixels that rounding cannot cross.
  margin = _BORDER_MARGIN_PX / size
  blend = largest_safe_blend(
      reflected, offset, _valid_point_mask(points, lengths, present),
      lower=margin, upper=(size - 1) / size - margin)
  linear = ((1.0 - blend) * identity + blend * draw) @ reflection
  return affine_about_centre(linear, size)


def _sample_bilinear(plane: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
  """Sample plane [S, S] bilinearly at pixel coordinates, with zeros outside it."""
  return ndimage.map_coordinates(plane, [rows, cols], order=1, mode="constant", cval=0.0)


def apply_affine(example: Mapping[str, jax.Array], matrix: jax.Array) -> dict[str, jax.Array]:
  """Warp one example with an affine map in normalised coordinates.

  Args:
    example: `image` [S, S, C], `masks` [O, S, S] in {0, 1}, `points`
      [O, P, 2] normalised; other fields are copied unchanged.
    matrix: [2, 3] map from input to output normalised coordinates. It must be
      invertible.

  Returns:
    The example with the warped image (bilinear, zero outside the input),
    masks (bilinear, then 1 where the value is >= 0.5, else 0) and points. All
    point rows are moved, including padding rows, which later code ignores.
  """
  image = example["image"]
  size = image.shape[0]
  linear = matrix[:, :2]
  translation_px = matrix[:, 2] * size
  # Inverse of the linear part by the adjugate: output pixels pull from inputs.
  determinant = linear[0, 0] * linear[1, 1] - linear[0, 1] * linear[1, 0]
  inverse = jnp.array([[linear[1, 1], -linear[0, 1]], [-linear[1, 0], linear[0, 0]]])
  inverse = inverse / determinant

  grid = jnp.arange(size, dtype=jnp.float32)
  out_y, out_x = jnp.meshgrid(grid, grid, indexing="ij")
  out_xy = jnp.stack([out_x, out_y], axis=-1) - translation_px
  source_xy = out_xy @ inverse.T
  source_cols, source_rows = source_xy[..., 0], source_xy[..., 1]

  warp = lambda plane: _sample_bilinear(plane, source_rows, source_cols)
  warped_image = jax.vmap(warp, in_axes=-1, out_axes=-1)(image)
  warped_masks = jax.vmap(warp)(example["masks"].astype(jnp.float32))

  result = dict(example)
  result["image"] = warped_image.astype(image.dtype)
  result["masks"] = (warped_masks >= 0.5).astype(example["masks"].dtype)
  result["points"] = example["points"] @ linear.T + matrix[:, 2]
  return result


def adjust_intensity(rng: jax.Array, image: jax.Array, config: Any) -> jax.Array:
  """Apply a random gamma, then additive Gaussian noise, to an image in [0, 1].

  The output is `image ** (1 / gamma) + noise_std * N(0, 1)` with gamma uniform
  in [gamma_min, gamma_max], the convention of the reference code (gamma > 1
  brightens). The image is clipped to [0, 1] before the power so that values
  that resampling pushed slightly below 0 cannot give NaN.
  NOTE: the result is not clipped after the noise, as in the reference code,
  so values can fall slightly outside [0, 1]. The reference also rounds the
  image to 8 bits for its gamma lookup table; this function does not.
  """
  key_gamma, key_noise = jax.random.split(rng)
  gamma = jax.random.uniform(key_gamma, minval=config.gamma_min, maxval=config.gamma_max)
  adjusted = jnp.clip(image, 0.0, 1.0) ** (1.0 / gamma)
  noise = config.noise_std * jax.random.normal(key_noise, image.shape, dtype=image.dtype)
  return (adjusted + noise).astype(image.dtype)


def augment_example(
    rng: jax.Array,
    example: Mapping[str, jax.Array],
    config: Any,
    *,
    allow_horizontal_flip: bool,
    allow_vertical_flip: bool,
    allow_transpose: bool,
) -> dict[str, jax.Array]:
  """Augment one example (fields as in `apply_affine`, plus lengths, present)."""
  key_affine, key_intensity = jax.random.split(rng)
  matrix = random_affine(
      key_affine,
      example["points"],
      example["lengths"],
      example["present"],
      example["image"].shape[0],
      config,
      allow_horizontal_flip=allow_horizontal_flip,
      allow_vertical_flip=allow_vertical_flip,
      allow_transpose=allow_transpose)
  result = apply_affine(example, matrix)
  result["image"] = adjust_intensity(key_intensity, result["image"], config)
  return result


def augment_batch(
    rng: jax.Array,
    batch: Mapping[str, Any],
    config: Any,
    *,
    allow_horizontal_flip: bool,
    allow_vertical_flip: bool,
    allow_transpose: bool,
) -> dict[str, Any]:
  """Augment every example of a batch with its own random draw.

  Jittable when the config and flags are fixed at trace time (close over them
  or bind them with functools.partial). The flags come from the dataset
  metadata: left/right flips must stay off where left and right organs differ
  (chest X-ray lungs).

  Args:
    rng: PRNG key, split into one key per example.
    batch: `image` [B, S, S, 1], `masks` [B, O, S, S], `points` [B, O, P, 2],
      `lengths` [B, O], `present` [B, O]; other fields (`valid`) pass through.
    config: augmentation config; with `enabled` False the batch is returned
      unchanged.
    allow_horizontal_flip: allow left/right mirroring.
    allow_vertical_flip: allow top/bottom mirroring.
    allow_transpose: allow swapping rows and columns.

  Returns:
    A new batch dict with augmented image, masks and points; lengths and
    present are unchanged.
  """
  if not config.enabled:
    return dict(batch)
  validate_augment_config(config)
  examples = {key: batch[key] for key in _EXAMPLE_KEYS}
  keys = jax.random.split(rng, batch["image"].shape[0])

  def augment_one(key, example):
    return augment_example(
        key,
        example,
        config,
        allow_horizontal_flip=allow_horizontal_flip,
        allow_vertical_flip=allow_vertical_flip,
        allow_transpose=allow_transpose)

  augmented = jax.vmap(augment_one)(keys, examples)
  result = dict(batch)
  result.update(augmented)
  return result
