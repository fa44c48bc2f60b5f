"""From an original image to the square network input, and back for points.

The network input is an `S x S` image: the original `[H, W]` image, min-max
normalised to [0, 1], padded with zeros to a centred square of side
`L = max(H, W)`, then resized by `r = S / L`. Pixel k has its centre at
coordinate k, so with half-pixel-centre resizing an original point maps as
`x_net = (x_orig + pad_left + 0.5) * r - 0.5` (and likewise for y).
`SquareTransform` holds this map and its inverse.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class SquareTransform:
  """The map between original image pixels and network input pixels.

  Attributes:
    height: original image height H, in pixels.
    width: original image width W, in pixels.
    size: network input side S, in pixels.
  """

  height: int
  width: int
  size: int

  def __post_init__(self):
    for name in ("height", "width", "size"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"SquareTransform.{name} must be a positive integer, got {value!r}.")

  @property
  def side(self) -> int:
    """Side of the padded square, `max(H, W)`, in original pixels."""
    return max(self.height, self.width)

  @property
  def pad_top(self) -> int:
    """Rows of zeros added above the image (the extra odd row goes below)."""
    return (self.side - self.height) // 2

  @property
  def pad_left(self) -> int:
    """Columns of zeros added left of the image (the extra odd column goes right)."""
    return (self.side - self.width) // 2

  @property
  def scale(self) -> float:
    """Network pixels per original pixel, `S / side`."""
    return self.size / self.side

  def to_network(self, xy):
    """Map original pixel coordinates `[..., 2]` `(x, y)` to network pixels."""
    xy = _as_points(xy)
    return (xy + self._pad + 0.5) * self.scale - 0.5

  def from_network(self, xy):
    """Map network pixel coordinates `[..., 2]` `(x, y)` to original pixels."""
    xy = _as_points(xy)
    return (xy + 0.5) / self.scale - 0.5 - self._pad

  def to_normalized(self, xy):
    """Map original pixel coordinates `[..., 2]` to normalised [0, 1] network coordinates."""
    return self.to_network(xy) / self.size

  def from_normalized(self, xy):
    """Map normalised network coordinates `[..., 2]` to original pixel coordinates."""
    return self.from_network(_as_points(xy) * self.size)

  @property
  def _pad(self) -> np.ndarray:
    return np.array([self.pad_left, self.pad_top], dtype=np.float32)


def normalize_intensity(image: np.ndarray) -> np.ndarray:
  """Min-max normalise an image to [0, 1]; a constant image becomes zeros.

  Args:
    image: `[H, W]` intensities in any real range.

  Returns:
    float32 array of the same shape.

  Raises:
    ValueError: the image contains NaN or infinite values.
  """
  image = np.asarray(image, dtype=np.float64)
  if not np.all(np.isfinite(image)):
    raise ValueError(
        "image contains NaN or infinite values; fix or mask them before normalisation.")
  if image.size == 0:
    return image.astype(np.float32)
  low, high = float(image.min()), float(image.max())
  if high == low:
    return np.zeros(image.shape, dtype=np.float32)
  return ((image - low) / (high - low)).astype(np.float32)


def prepare_image(image: np.ndarray, size: int) -> tuple[np.ndarray, SquareTransform]:
  """Turn an original image into the network input.

  Min-max normalises, pads with zeros to a centred square, and resizes it to
  `size x size` with bilinear interpolation that is antialiased when
  shrinking (Pillow's triangle filter, widened by the shrink factor).

  Args:
    image: `[H, W]` intensities.
    size: network input side S, in pixels.

  Returns:
    `(network_image, transform)`: float32 `[S, S]` in [0, 1] and the
    `SquareTransform` from original to network pixels.
  """
  image = np.asarray(image)
  if image.ndim != 2:
    raise ValueError(f"prepare_image expects a 2-D [H, W] image, got shape {image.shape}.")
  transform = SquareTransform(int(image.shape[0]), int(image.shape[1]), int(size))
  normalized = normalize_intensity(image)

  side = transform.side
  square = np.zeros((side, side), dtype=np.float32)
  square[transform.pad_top:transform.pad_top + transform.height,
         transform.pad_left:transform.pad_left + transform.width] = normalized
  if side == transform.size:
    return square, transform

  resized = Image.fromarray(square).resize(
      (transform.size, transform.size), resample=Image.Resampling.BILINEAR)
  # The filter weights are non-negative and sum to one, so only float32
  # rounding can leave [0, 1].
  network_image = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
  return network_image, transform


def resize_masks(masks: np.ndarray, transform: SquareTransform) -> np.ndarray:
  """Resize organ masks to the network input by nearest-neighbour sampling.

  Each network pixel centre is mapped back to the original image and takes
  the value of the original pixel it falls in. Centres in the padding get 0.

  Args:
    masks: bool or uint8 `[O, H, W]`.
    transform: the image's `SquareTransform`.

  Returns:
    uint8 `[O, S, S]`.
  """
  masks = np.asarray(masks)
  if masks.ndim != 3 or masks.shape[1:] != (transform.height, transform.width):
    raise ValueError(
        f"masks must have shape [O, {transform.height}, {transform.width}] to match the "
        f"image, got {masks.shape}.")
  if masks.dtype != np.bool_ and masks.dtype != np.uint8:
    raise ValueError(f"masks must be bool or uint8, got {masks.dtype}.")
  return _sample_nearest(masks.astype(np.uint8), transform)


def resize_label_map(label_map: np.ndarray, transform: SquareTransform) -> np.ndarray:
  """Resize a label map to the network input by nearest-neighbour sampling.

  Only values present in the input (and 0 for the padding) appear in the
  output.

  Args:
    label_map: integer `[H, W]`.
    transform: the image's `SquareTransform`.

  Returns:
    `[S, S]` with the input's dtype.
  """
  label_map = np.asarray(label_map)
  if label_map.shape != (transform.height, transform.width):
    raise ValueError(
        f"label map must have shape [{transform.height}, {transform.width}] to match the "
        f"image, got {label_map.shape}.")
  return _sample_nearest(label_map[None], transform)[0]


def _sample_nearest(stack: np.ndarray, transform: SquareTransform) -> np.ndarray:
  """Nearest-neighbour sample `[C, H, W]` at every network pixel centre; `[C, S, S]`."""
  centres = np.arange(transform.size, dtype=np.float64)
  # The map is separable: x depends only on the column, y only on the row.
  x = (centres + 0.5) / transform.scale - 0.5 - transform.pad_left
  y = (centres + 0.5) / transform.scale - 0.5 - transform.pad_top
  # floor(v + 0.5) rounds halves up, the same way on every axis.
  cols = np.floor(x + 0.5).astype(np.int64)
  rows = np.floor(y + 0.5).astype(np.int64)
  col_valid = (cols >= 0) & (cols < transform.width)
  row_valid = (rows >= 0) & (rows < transform.height)

  out = np.zeros((stack.shape[0], transform.size, transform.size), dtype=stack.dtype)
  sampled = stack[:, rows[row_valid]][:, :, cols[col_valid]]
  out[:, np.flatnonzero(row_valid)[:, None], np.flatnonzero(col_valid)[None, :]] = sampled
  return out


def _as_points(xy):
  """Pass arrays (NumPy or JAX) through; turn lists into float64 arrays."""
  if not hasattr(xy, "shape"):
    xy = np.asarray(xy, dtype=np.float64)
  if xy.shape[-1:] != (2,):
    raise ValueError(f"points must have shape [..., 2], got {tuple(xy.shape)}.")
  return xy
