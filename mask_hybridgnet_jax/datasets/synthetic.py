"""Procedural chest-like images with two lung label maps, for demos and tests.

`write_synthetic_dataset` writes a folder in the `mask_folder` layout. Every
image is drawn from its own generator seeded with `(seed, index)`, so the
files depend only on the seed, the size and the index, and the same arguments
give byte-identical files. Each image shows a bright body with faint ribs, a
spine and a heart, and two dark lungs whose boundaries coincide with the label
map: a model has to find the lungs in the image to place them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mask_hybridgnet_jax.io import atomic
from mask_hybridgnet_jax.organs import DatasetMetadata, Organ

logger = logging.getLogger(__name__)

METADATA = DatasetMetadata(organs=(Organ("right_lung", 1), Organ("left_lung", 2)))
GENERATOR_VERSION = 1
MIN_SIZE = 32


@dataclasses.dataclass(frozen=True)
class LungShape:
  """A star-shaped closed curve `rho <= radius(theta)` around a centre.

  Angles are measured from the +x axis towards +y (down the image), in pixel
  units with the centre of pixel k at coordinate k.

  Attributes:
    center: (x, y) in pixels.
    half_width: horizontal semi-axis of the base superellipse, pixels.
    half_height: vertical semi-axis, pixels.
    exponent: superellipse exponent; 2 is an ellipse, larger is boxier.
    taper: relative widening towards the base (bottom) of the lung.
    harmonics: [K, 3] rows (order k, relative amplitude, phase) of the radial
      Fourier perturbation.
  """

  center: tuple[float, float]
  half_width: float
  half_height: float
  exponent: float
  taper: float
  harmonics: np.ndarray

  def radius(self, theta: np.ndarray) -> np.ndarray:
    """Return the boundary radius in pixels at angles `theta` (any shape)."""
    cos, sin = np.cos(theta), np.sin(theta)
    half_width = self.half_width * (1.0 + self.taper * sin)
    n = self.exponent
    base = (np.abs(cos / half_width) ** n + np.abs(sin / self.half_height) ** n) ** (-1.0 / n)
    perturbation = np.ones_like(theta)
    for order, amplitude, phase in self.harmonics:
      perturbation = perturbation + amplitude * np.cos(order * theta + phase)
    return base * perturbation

  def signed_depth(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return radius(theta) - rho in pixels: positive inside, negative outside."""
    dx = x - self.center[0]
    dy = y - self.center[1]
    return self.radius(np.arctan2(dy, dx)) - np.hypot(dx, dy)


def _random_lung(rng: np.random.Generator, size: int, side: float) -> LungShape:
  """Draw one lung; `side` is -1 for the image's left half, +1 for the right."""
  # These ranges keep the two lungs apart and away from the image border
  # (over 200 seeds at size 128: gap >= 14 px, margin >= 17 px).
  offset = rng.uniform(0.18, 0.22)
  harmonics = np.stack([
      np.arange(2, 5, dtype=np.float64),
      rng.uniform(0.0, 0.04, size=3),
      rng.uniform(0.0, 2.0 * np.pi, size=3),
  ], axis=1)
  return LungShape(
      center=((0.5 + side * offset) * size, rng.uniform(0.50, 0.55) * size),
      half_width=rng.uniform(0.10, 0.13) * size,
      half_height=rng.uniform(0.22, 0.28) * size,
      exponent=rng.uniform(2.0, 3.0),
      taper=rng.uniform(0.10, 0.25),
      harmonics=harmonics,
  )


def _sigmoid(z: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * z))


def synthetic_example(size: int, seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
  """Draw one image and its label map.

  Args:
    size: image side in pixels.
    seed: dataset seed.
    index: image index; with `seed` it fixes the random draws.

  Returns:
    (uint8 image [size, size], uint8 label map [size, size] with 0
    background, 1 right lung on the image's left, 2 left lung).
  """
  rng = np.random.default_rng([seed, index])
  y, x = np.mgrid[0:size, 0:size].astype(np.float64)
  edge = max(0.5, size / 200)  # width of soft edges, pixels

  # Body: a bright ellipse with a soft border on a dark background.
  body_center = ((0.5 + rng.uniform(-0.02, 0.02)) * size, 0.55 * size)
  body_axes = (rng.uniform(0.42, 0.47) * size, rng.uniform(0.48, 0.53) * size)
  body_radius = np.hypot((x - body_center[0]) / body_axes[0], (y - body_center[1]) / body_axes[1])
  body = _sigmoid((1.0 - body_radius) * min(body_axes) / (2 * edge))
  background = rng.uniform(0.0, 0.08)
  tissue = background + (rng.uniform(0.5, 0.7) - background) * body

  # Ribs: faint curved bands, spine: a bright vertical band, heart: a bright
  # blob below the midline, all inside the body.
  period = rng.uniform(0.08, 0.11) * size
  curvature = rng.uniform(0.8, 1.6) / size
  rib_phase = 2 * np.pi * (y - curvature * (x - body_center[0]) ** 2) / period + rng.uniform(0, 2 * np.pi)
  ribs = rng.uniform(0.04, 0.08) * (0.5 + 0.5 * np.cos(rib_phase)) ** 4
  spine = 0.12 * np.exp(-0.5 * ((x - body_center[0]) / (0.03 * size)) ** 2)
  heart_center = ((0.5 + rng.uniform(0.02, 0.06)) * size, rng.uniform(0.62, 0.68) * size)
  heart = 0.1 * _sigmoid(
      (0.11 * size - np.hypot(x - heart_center[0], y - heart_center[1])) / (3 * edge))
  image = tissue + body * (ribs + spine + heart)

  # Lungs darken what lies beneath them, so ribs stay faintly visible. The
  # darkening is 1/2 exactly on the label-map boundary.
  labels = np.zeros((size, size), np.uint8)
  for label, side in ((1, -1.0), (2, 1.0)):
    lung = _random_lung(rng, size, side)
    depth = lung.signed_depth(x, y)
    image = image * (1.0 - rng.uniform(0.45, 0.65) * _sigmoid(depth / edge))
    labels[depth >= 0] = label

  image = image + rng.normal(0.0, 0.02, size=image.shape)
  image = np.round(255 * np.clip(image, 0.0, 1.0)).astype(np.uint8)
  return image, labels


def _parameters(num_images: int, size: int, seed: int) -> dict[str, int]:
  return {"generator_version": GENERATOR_VERSION, "num_images": num_images, "size": size,
          "seed": seed}


def write_synthetic_dataset(
    out_dir: str | os.PathLike[str], num_images: int = 40, size: int = 128, seed: int = 0,
) -> Path:
  """Write a synthetic two-lung dataset in the `mask_folder` layout.

  The folder gets `images/synthetic_NNNN.png` (8-bit), `masks/synthetic_NNNN.png`
  (label maps: 1 right_lung, 2 left_lung), `metadata.json` and
  `synthetic.json` (the generator arguments). Everything is written to a
  temporary sibling folder that is renamed to `out_dir` at the end, so
  `out_dir` is either complete or absent. An existing `out_dir` written with
  the same arguments is reused.

  Args:
    out_dir: destination folder. It must be absent, empty, or contain a
      synthetic dataset written with the same arguments.
    num_images: number of image/label-map pairs.
    size: image side in pixels, at least 32.
    seed: random seed.

  Returns:
    `out_dir` as a Path.

  Raises:
    ValueError: invalid arguments.
    FileExistsError: `out_dir` contains other files.
  """
  if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
    raise ValueError(f"num_images must be a positive integer, got {num_images!r}.")
  if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
    raise ValueError(
        f"size must be an integer >= {MIN_SIZE} so that each lung spans several pixels, "
        f"got {size!r}.")
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")

  out_dir = Path(out_dir)
  parameters = _parameters(num_images, size, seed)
  if out_dir.exists() and any(out_dir.iterdir()):
    marker = out_dir / "synthetic.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == parameters:
      logger.info("Reusing the synthetic dataset in %s.", out_dir)
      return out_dir
    raise FileExistsError(
        f"{out_dir} already exists and contains other files. Choose a new folder or delete it.")

  out_dir.parent.mkdir(parents=True, exist_ok=True)
  staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
  try:
    for index in range(num_images):
      image, labels = synthetic_example(size, seed, index)
      name = f"synthetic_{index:04d}.png"
      atomic.write_png_atomic(staging / "images" / name, image)
      atomic.write_png_atomic(staging / "masks" / name, labels)
    atomic.write_json_atomic(staging / "metadata.json", METADATA.to_dict())
    atomic.write_json_atomic(staging / "synthetic.json", parameters)
    # Renaming onto an empty folder is allowed on POSIX; a non-empty one was
    # rejected above.
    os.replace(staging, out_dir)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  logger.info("Wrote %d synthetic images of %dx%d pixels to %s.", num_images, size, size, out_dir)
  return out_dir
