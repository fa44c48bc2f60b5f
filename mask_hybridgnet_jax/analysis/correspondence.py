"""A measure of anatomical correspondence between graph nodes and manual landmarks.

Node i of a graph model should mark the same anatomical place in every
patient. Given manual landmarks that correspond across patients (landmark j
marks one place in every image), the metric is:

1. On the training split, give each landmark j the node index `i(j)` whose
   distance to landmark j, averaged over the training images, is smallest.
2. On the test split, report the distance between node `i(j)` and landmark j,
   averaged over landmarks and images, per organ, in pixels and as a fraction
   of the organ's size.

The same procedure applied to a naive baseline gives the number to beat.
The baseline resamples each predicted contour to the same node count by arc
length, starting from its topmost point. It has correspondence only as far
as arc-length position along the contour carries it, so a model whose error
is lower than the baseline's has correspondence beyond that.

Organ size is `sqrt(area)` of the manual landmark polygon of that image, so
the relative error does not depend on the image resolution.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from mask_hybridgnet_jax.contours import orient_positive, polygon_perimeter, signed_area
from mask_hybridgnet_jax.mean_shape import resample_closed


@dataclasses.dataclass(frozen=True)
class OrganCorrespondence:
  """Correspondence error of one organ on the test split.

  Attributes:
    organ: organ name.
    assignment: `[M]` node index `i(j)` chosen for each landmark on the training split.
    errors: `[P_test, M]` distance between node `i(j)` and landmark j, pixels.
    relative_errors: `[P_test, M]` the same divided by the organ size of that image.
    mean_error: mean of `errors`, pixels.
    mean_relative_error: mean of `relative_errors`.
    baseline_assignment, baseline_errors, baseline_relative_errors,
      baseline_mean_error, baseline_mean_relative_error: the same for the
      arc-length baseline.
  """

  organ: str
  assignment: np.ndarray
  errors: np.ndarray
  relative_errors: np.ndarray
  mean_error: float
  mean_relative_error: float
  baseline_assignment: np.ndarray
  baseline_errors: np.ndarray
  baseline_relative_errors: np.ndarray
  baseline_mean_error: float
  baseline_mean_relative_error: float

  def summary(self) -> dict[str, float | str | int]:
    """Return one row of numbers: ours, the baseline and the relative reduction."""
    reduction = (1.0 - self.mean_error / self.baseline_mean_error
                 if self.baseline_mean_error > 0 else float("nan"))
    return {
        "organ": self.organ,
        "landmarks": int(self.assignment.shape[0]),
        "test_images": int(self.errors.shape[0]),
        "error_px": self.mean_error,
        "relative_error": self.mean_relative_error,
        "baseline_error_px": self.baseline_mean_error,
        "baseline_relative_error": self.baseline_mean_relative_error,
        "reduction_vs_baseline": reduction,
    }


def _check_stack(points: np.ndarray, name: str) -> np.ndarray:
  points = np.asarray(points, np.float64)
  if points.ndim != 3 or points.shape[2] != 2 or points.shape[0] < 1 or points.shape[1] < 1:
    raise ValueError(f"{name} must be [P, N, 2] with P, N >= 1, got shape {points.shape}.")
  if not np.all(np.isfinite(points)):
    raise ValueError(f"{name} contains non-finite coordinates.")
  return points


def assign_landmarks(nodes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
  """Choose, for each landmark, the node closest to it on average over images.

  Args:
    nodes: `[P, N, 2]` node positions of P images, pixels.
    landmarks: `[P, M, 2]` landmarks of the same images, pixels.

  Returns:
    int64 `[M]`: `i(j) = argmin_i mean_p |nodes[p, i] - landmarks[p, j]|`
    (the lowest index wins a tie).
  """
  nodes = _check_stack(nodes, "nodes")
  landmarks = _check_stack(landmarks, "landmarks")
  if nodes.shape[0] != landmarks.shape[0]:
    raise ValueError(
        f"nodes and landmarks must cover the same images, got {nodes.shape[0]} and "
        f"{landmarks.shape[0]}.")
  difference = nodes[:, :, None, :] - landmarks[:, None, :, :]  # [P, N, M, 2]
  distance = np.sqrt(np.sum(difference * difference, axis=-1))
  return np.argmin(distance.mean(axis=0), axis=0)


def assigned_errors(
    nodes: np.ndarray, landmarks: np.ndarray, assignment: np.ndarray) -> np.ndarray:
  """Return `[P, M]` distances between node `assignment[j]` and landmark j, pixels."""
  nodes = _check_stack(nodes, "nodes")
  landmarks = _check_stack(landmarks, "landmarks")
  assignment = np.asarray(assignment, np.int64)
  if assignment.shape != (landmarks.shape[1],):
    raise ValueError(
        f"assignment must have one node index per landmark ({landmarks.shape[1]}), got "
        f"shape {assignment.shape}.")
  if assignment.min() < 0 or assignment.max() >= nodes.shape[1]:
    raise ValueError(
        f"assignment indices must be in [0, {nodes.shape[1]}), got range "
        f"[{assignment.min()}, {assignment.max()}].")
  difference = nodes[:, assignment] - landmarks
  return np.sqrt(np.sum(difference * difference, axis=-1))


def organ_size(landmarks: np.ndarray) -> np.ndarray:
  """Return `sqrt(|area|)` of each landmark polygon, `[P, M, 2]` -> `[P]` pixels."""
  landmarks = _check_stack(landmarks, "landmarks")
  return np.sqrt(np.abs(np.array([signed_area(points) for points in landmarks])))


def resample_by_arc_length(contour: np.ndarray, num_points: int) -> np.ndarray:
  """Resample a closed contour to points evenly spaced by arc length.

  The contour is first oriented to positive shoelace area (the ground-truth
  convention) so that every patient's contour runs the same way round, then
  started at its topmost point. Point k lies at arc length `k * L / num_points`
  from the start, L the perimeter.

  Args:
    contour: `[P, 2]` closed polygon (first point not repeated), P >= 2.
    num_points: K, the number of output points.

  Returns:
    `[K, 2]` float64.

  Raises:
    ValueError: fewer than two points, or a perimeter of zero.
  """
  contour = np.asarray(contour, np.float64)
  if contour.ndim != 2 or contour.shape[1] != 2 or contour.shape[0] < 2:
    raise ValueError(f"contour must be [P, 2] with P >= 2, got shape {contour.shape}.")
  if num_points < 1:
    raise ValueError(f"num_points must be positive, got {num_points}.")
  if polygon_perimeter(contour) == 0.0:
    raise ValueError("cannot resample a contour whose points are all equal (zero perimeter).")
  return resample_closed(orient_positive(contour), num_points)


def organ_correspondence(
    organ: str,
    train_nodes: np.ndarray,
    train_landmarks: np.ndarray,
    test_nodes: np.ndarray,
    test_landmarks: np.ndarray,
) -> OrganCorrespondence:
  """Compute the correspondence error of one organ and its arc-length baseline.

  Args:
    organ: organ name, used in the result.
    train_nodes: `[P_train, N, 2]` predicted nodes, pixels.
    train_landmarks: `[P_train, M, 2]` manual landmarks, pixels.
    test_nodes: `[P_test, N, 2]`.
    test_landmarks: `[P_test, M, 2]`.

  Returns:
    An `OrganCorrespondence`. The baseline resamples each predicted contour
    to N points by arc length from its topmost point.
  """
  train_nodes = _check_stack(train_nodes, f"{organ}: training nodes")
  test_nodes = _check_stack(test_nodes, f"{organ}: test nodes")
  if train_nodes.shape[1] != test_nodes.shape[1]:
    raise ValueError(
        f"{organ}: training and test graphs have different node counts "
        f"({train_nodes.shape[1]} and {test_nodes.shape[1]}).")
  num_nodes = train_nodes.shape[1]
  test_size = organ_size(test_landmarks)
  if np.any(test_size == 0):
    raise ValueError(f"{organ}: a test landmark polygon has zero area; its size is undefined.")

  assignment = assign_landmarks(train_nodes, train_landmarks)
  errors = assigned_errors(test_nodes, test_landmarks, assignment)

  def baseline(nodes):
    return np.stack([resample_by_arc_length(contour, num_nodes) for contour in nodes])

  baseline_train, baseline_test = baseline(train_nodes), baseline(test_nodes)
  baseline_assignment = assign_landmarks(baseline_train, train_landmarks)
  baseline_errors = assigned_errors(baseline_test, test_landmarks, baseline_assignment)
  relative = errors / test_size[:, None]
  baseline_relative = baseline_errors / test_size[:, None]
  return OrganCorrespondence(
      organ=organ,
      assignment=assignment,
      errors=errors,
      relative_errors=relative,
      mean_error=float(errors.mean()),
      mean_relative_error=float(relative.mean()),
      baseline_assignment=baseline_assignment,
      baseline_errors=baseline_errors,
      baseline_relative_errors=baseline_relative,
      baseline_mean_error=float(baseline_errors.mean()),
      baseline_mean_relative_error=float(baseline_relative.mean()),
  )


def correspondence_report(
    predictions: Mapping[str, Mapping[str, np.ndarray]],
    landmarks: Mapping[str, Mapping[str, np.ndarray]],
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    organs: Sequence[str] | None = None,
) -> list[OrganCorrespondence]:
  """Run `organ_correspondence` for every organ over id-keyed records.

  Args:
    predictions: image id -> organ -> `[N, 2]` predicted nodes (pixels).
    landmarks: image id -> organ -> `[M, 2]` manual landmarks (pixels, same frame).
    train_ids: ids whose landmarks choose the assignment.
    test_ids: ids on which the error is measured; must not overlap train_ids.
    organs: organs to evaluate; default the organs of the first training
      landmark file that the first prediction also has.

  Raises:
    ValueError: an id lacks a prediction or landmarks, the splits overlap or are
      empty, or no organ is shared.
  """
  train_ids, test_ids = list(train_ids), list(test_ids)
  if not train_ids or not test_ids:
    raise ValueError(
        f"both splits need images: {len(train_ids)} training and {len(test_ids)} test ids.")
  overlap = sorted(set(train_ids) & set(test_ids))
  if overlap:
    raise ValueError(f"training and test ids overlap: {overlap[:5]}; the test split must be "
                     "disjoint from the one that chooses the assignment.")
  for image_id in train_ids + test_ids:
    if image_id not in predictions:
      raise ValueError(f"no prediction for image {image_id!r}; run predict on it first.")
    if image_id not in landmarks:
      raise ValueError(f"no manual landmarks for image {image_id!r}.")
  if organs is None:
    first = train_ids[0]
    organs = [name for name in landmarks[first] if name in predictions[first]]
    if not organs:
      raise ValueError(
          f"image {first!r}: no organ name is shared by the prediction "
          f"({sorted(predictions[first])}) and the landmarks ({sorted(landmarks[first])}).")

  def stack(records, ids, organ, what):
    arrays = []
    for image_id in ids:
      if organ not in records[image_id]:
        raise ValueError(f"{what} of image {image_id!r} lack organ {organ!r}.")
      arrays.append(np.asarray(records[image_id][organ], np.float64))
    if len({a.shape for a in arrays}) != 1:
      raise ValueError(f"{what} of organ {organ!r} have different point counts across images.")
    return np.stack(arrays)

  return [
      organ_correspondence(
          organ,
          stack(predictions, train_ids, organ, "predictions"),
          stack(landmarks, train_ids, organ, "landmarks"),
          stack(predictions, test_ids, organ, "predictions"),
          stack(landmarks, test_ids, organ, "landmarks"),
      )
      for organ in organs
  ]


def split_ids(ids: Sequence[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
  """Split ids into (train, test) with a seeded permutation of the sorted ids.

  At least one id lands in each part; `round(n * test_fraction)` ids go to test.
  """
  ids = sorted(set(ids))
  if len(ids) < 2:
    raise ValueError(f"a train/test split needs at least 2 images, got {len(ids)}.")
  if not 0 < test_fraction < 1:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
  order = np.random.default_rng(seed).permutation(len(ids))
  num_test = min(max(int(round(len(ids) * test_fraction)), 1), len(ids) - 1)
  shuffled = [ids[i] for i in order]
  return sorted(shuffled[num_test:]), sorted(shuffled[:num_test])
