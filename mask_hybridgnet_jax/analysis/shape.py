"""Population shape statistics: Procrustes alignment, mean shape and PCA modes.

A shape is `[N, 2]` points `(x, y)` with point i corresponding across shapes
(for a multi-organ graph, the organs' nodes concatenated in organ order).
Alignment is a similarity transform: translation, rotation and isotropic
scale; reflections are never used, because a mirrored left lung is not a
right lung.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Similarity:
  """The map `x -> scale * x @ rotation + translation` on row vectors `(x, y)`.

  Attributes:
    scale: isotropic scale factor.
    rotation: `[2, 2]` proper rotation (determinant +1).
    translation: `[2]` added after scaling and rotating.
  """

  scale: float
  rotation: np.ndarray
  translation: np.ndarray

  def apply(self, points: np.ndarray) -> np.ndarray:
    """Map `[..., 2]` points."""
    return self.scale * np.asarray(points, np.float64) @ self.rotation + self.translation


@dataclasses.dataclass(frozen=True)
class GeneralizedProcrustesResult:
  """Output of `generalized_procrustes`.

  Attributes:
    aligned: `[P, N, 2]` shapes aligned to the mean, in its units (unit centroid size).
    mean: `[N, 2]` mean shape, centred, centroid size 1.
    transforms: per shape, the similarity that maps it onto `aligned`.
    iterations: alignment rounds run.
    converged: whether the mean moved less than the tolerance in the last round.
  """

  aligned: np.ndarray
  mean: np.ndarray
  transforms: list[Similarity]
  iterations: int
  converged: bool


@dataclasses.dataclass(frozen=True)
class ShapeModes:
  """Principal modes of variation of aligned shapes.

  Attributes:
    mean: `[N, 2]` mean shape.
    modes: `[K, N, 2]` unit-norm mode directions (flattened norm 1).
    std: `[K]` standard deviation of the shapes along each mode, in the units of `mean`.
    explained_variance_ratio: `[K]` share of the total variance per mode.
  """

  mean: np.ndarray
  modes: np.ndarray
  std: np.ndarray
  explained_variance_ratio: np.ndarray

  def shape_at(self, mode: int, num_std: float) -> np.ndarray:
    """Return `mean + num_std * std[mode] * modes[mode]`, `[N, 2]`."""
    return self.mean + num_std * self.std[mode] * self.modes[mode]


def _check_shape(points: np.ndarray, name: str) -> np.ndarray:
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 2:
    raise ValueError(f"{name} must be [N, 2] with N >= 2 points, got shape {points.shape}.")
  if not np.all(np.isfinite(points)):
    raise ValueError(f"{name} contains non-finite coordinates.")
  return points


def centroid_size(points: np.ndarray) -> float:
  """Return the root of the summed squared distances to the centroid, `[N, 2]` -> scalar."""
  centred = points - points.mean(axis=0)
  return float(np.sqrt(np.sum(centred * centred)))


def procrustes_align(
    shape: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, Similarity, float]:
  """Align `shape` onto `reference` with the least-squares similarity transform.

  The rotation comes from the SVD of the cross-covariance of the centred
  point sets (Kabsch), restricted to proper rotations. The scale is then the
  closed-form least-squares scale.

  Args:
    shape: `[N, 2]` points to move.
    reference: `[N, 2]` target points, same correspondence.

  Returns:
    `(aligned [N, 2], transform, rms)` where rms is the root mean squared
    distance between aligned and reference points, in the reference's units.

  Raises:
    ValueError: the shapes differ in size, or one has all points equal.
  """
  shape = _check_shape(shape, "shape")
  reference = _check_shape(reference, "reference")
  if shape.shape != reference.shape:
    raise ValueError(
        f"shape and reference must have the same number of points, got {shape.shape} and "
        f"{reference.shape}.")
  shape_mean, reference_mean = shape.mean(axis=0), reference.mean(axis=0)
  x = shape - shape_mean
  y = reference - reference_mean
  norm_x = float(np.sum(x * x))
  if norm_x == 0.0 or not np.any(y):
    raise ValueError("cannot align a shape whose points are all equal (zero centroid size).")
  u, singular, vt = np.linalg.svd(x.T @ y)
  # Flip the weakest axis if the best orthogonal map is a reflection.
  sign = np.sign(np.linalg.det(u @ vt)) or 1.0
  correction = np.diag([1.0, sign])
  rotation = u @ correction @ vt
  scale = float(np.sum(singular * np.diag(correction)) / norm_x)
  translation = reference_mean - scale * shape_mean @ rotation
  transform = Similarity(scale, rotation, translation)
  aligned = transform.apply(shape)
  rms = float(np.sqrt(np.mean(np.sum((aligned - reference) ** 2, axis=1))))
  return aligned, transform, rms


def generalized_procrustes(
    shapes: np.ndarray, tolerance: float = 1e-8, max_iterations: int = 100,
) -> GeneralizedProcrustesResult:
  """Align a population of shapes to their common mean.

  The first shape (centred, unit centroid size) starts as the mean. Each
  round aligns every shape to the mean and recomputes the mean, rescaled to
  unit centroid size. The new mean is aligned to the previous one so that
  the frame does not drift. The loop stops when the mean moves less than
  `tolerance` (root mean squared point change, in units of centroid size).

  Args:
    shapes: `[P, N, 2]`, P >= 2.
    tolerance: convergence threshold on the mean's change.
    max_iterations: rounds before giving up; a warning is logged then.

  Returns:
    A `GeneralizedProcrustesResult`.
  """
  shapes = np.asarray(shapes, np.float64)
  if shapes.ndim != 3 or shapes.shape[2] != 2 or shapes.shape[0] < 2:
    raise ValueError(f"shapes must be [P, N, 2] with P >= 2, got shape {shapes.shape}.")
  if not tolerance > 0:
    raise ValueError(f"tolerance must be positive, got {tolerance}.")
  mean = shapes[0] - shapes[0].mean(axis=0)
  size = centroid_size(mean)
  if size == 0.0:
    raise ValueError("shape 0 has all points equal; it cannot start the alignment.")
  mean = mean / size

  converged = False
  iterations = 0
  aligned = shapes
  transforms: list[Similarity] = []
  for iterations in range(1, max_iterations + 1):
    results = [procrustes_align(s, mean) for s in shapes]
    aligned = np.stack([r[0] for r in results])
    transforms = [r[1] for r in results]
    new_mean = aligned.mean(axis=0)
    new_mean = new_mean - new_mean.mean(axis=0)
    new_mean = new_mean / centroid_size(new_mean)
    new_mean, _, _ = procrustes_align(new_mean, mean)
    new_mean = new_mean / centroid_size(new_mean)
    change = float(np.sqrt(np.mean(np.sum((new_mean - mean) ** 2, axis=1))))
    mean = new_mean
    if change < tolerance:
      converged = True
      break
  if not converged:
    logger.warning("generalised Procrustes did not converge in %d iterations (tolerance %g)",
                   max_iterations, tolerance)
  # One final pass so that `aligned` matches the returned mean exactly.
  results = [procrustes_align(s, mean) for s in shapes]
  aligned = np.stack([r[0] for r in results])
  transforms = [r[1] for r in results]
  return GeneralizedProcrustesResult(aligned, mean, transforms, iterations, converged)


def shape_modes(aligned: np.ndarray, num_modes: int | None = None) -> ShapeModes:
  """Principal component analysis of aligned shapes.

  Args:
    aligned: `[P, N, 2]` shapes in one frame (e.g. `generalized_procrustes(...).aligned`).
    num_modes: modes to keep; default and maximum `min(P - 1, 2 N)`.

  Returns:
    `ShapeModes` with variances from the sample covariance (divisor P - 1).
  """
  aligned = np.asarray(aligned, np.float64)
  if aligned.ndim != 3 or aligned.shape[2] != 2 or aligned.shape[0] < 2:
    raise ValueError(f"aligned must be [P, N, 2] with P >= 2, got shape {aligned.shape}.")
  count, num_points, _ = aligned.shape
  available = min(count - 1, 2 * num_points)
  if num_modes is None:
    num_modes = available
  if not 1 <= num_modes <= available:
    raise ValueError(
        f"num_modes must be between 1 and {available} for {count} shapes of {num_points} "
        f"points, got {num_modes}.")
  mean = aligned.mean(axis=0)
  flat = (aligned - mean).reshape(count, -1)
  _, singular, vt = np.linalg.svd(flat, full_matrices=False)
  variance = singular ** 2 / (count - 1)
  total = float(variance.sum())
  ratio = variance / total if total > 0 else np.zeros_like(variance)
  return ShapeModes(
      mean=mean,
      modes=vt[:num_modes].reshape(num_modes, num_points, 2),
      std=np.sqrt(variance[:num_modes]),
      explained_variance_ratio=ratio[:num_modes],
  )
