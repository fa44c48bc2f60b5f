"""Segmentation metrics per organ: Dice, Hausdorff distance and ASSD.

Surface distances are measured between the boundary pixels of two masks,
with `scipy.ndimage.distance_transform_edt`, in millimetres when the pixel
spacing `(row_mm, col_mm)` is known and in pixels otherwise.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import ndimage

EMPTY_MASK_POLICY = (
    "Empty masks: when the prediction and the ground truth are both empty, Dice is 1 and "
    "the Hausdorff distance and ASSD are 0, because the prediction is exactly right. When "
    "exactly one of them is empty, Dice is 0 and both distances are NaN, because no "
    "surface exists to measure from; those NaN values are left out of the means and "
    "standard deviations and counted per organ as missing distances."
)

# 4-connected structuring element: a pixel is on the surface when one of its
# four direct neighbours is background or outside the image.
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
  """Return the Dice coefficient `2 |P & G| / (|P| + |G|)`, 1 when both are empty.

  Args:
    pred: bool `[H, W]` predicted mask (nonzero counts as foreground).
    gt: bool `[H, W]` ground-truth mask.
  """
  pred, gt = _as_mask_pair(pred, gt)
  total = int(pred.sum()) + int(gt.sum())
  if total == 0:
    return 1.0
  return 2.0 * int(np.logical_and(pred, gt).sum()) / total


def surface_distances(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Return the distances between the surfaces of two masks, in both directions.

  The surface of a mask is its pixels with a 4-connected neighbour in the
  background or outside the image.

  Args:
    pred: bool `[H, W]` mask A.
    gt: bool `[H, W]` mask B.
    spacing: `(row_mm, col_mm)` pixel size, or None for pixel units.

  Returns:
    `(a_to_b, b_to_a)`: float64 `[n_A]` distance from each surface pixel of A
    to the nearest surface pixel of B, and `[n_B]` the reverse. An empty mask
    has no surface pixels, so its own array is empty and the distances from
    the other mask to it are NaN.
  """
  pred, gt = _as_mask_pair(pred, gt)
  sampling = _validate_spacing(spacing)
  surface_a = _surface(pred)
  surface_b = _surface(gt)
  return (_distances_to(surface_a, surface_b, sampling),
          _distances_to(surface_b, surface_a, sampling))


def hausdorff(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
) -> float:
  """Return the Hausdorff distance (maximum symmetric surface distance).

  In mm with `spacing` `(row_mm, col_mm)`, else in pixels. Both masks empty
  gives 0; exactly one empty gives NaN.
  """
  a_to_b, b_to_a = surface_distances(pred, gt, spacing)
  if a_to_b.size == 0 and b_to_a.size == 0:
    return 0.0
  if a_to_b.size == 0 or b_to_a.size == 0:
    return math.nan
  return float(max(a_to_b.max(), b_to_a.max()))


def assd(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
) -> float:
  """Return the average symmetric surface distance.

  The mean of the surface distances of both directions, concatenated. In mm
  with `spacing` `(row_mm, col_mm)`, else in pixels. Both masks empty gives
  0; exactly one empty gives NaN.
  """
  a_to_b, b_to_a = surface_distances(pred, gt, spacing)
  if a_to_b.size == 0 and b_to_a.size == 0:
    return 0.0
  if a_to_b.size == 0 or b_to_a.size == 0:
    return math.nan
  return float(np.mean(np.concatenate([a_to_b, b_to_a])))


def evaluate_organs(
    pred: np.ndarray,
    gt: np.ndarray,
    organ_names: Sequence[str],
    spacing: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
  """Compute Dice, Hausdorff distance and ASSD for every organ of one image.

  Args:
    pred: bool `[O, H, W]` predicted masks.
    gt: bool `[O, H, W]` ground-truth masks.
    organ_names: O names, in channel order.
    spacing: `(row_mm, col_mm)`, or None to report pixels.

  Returns:
    One row per organ: `{"organ", "dice", "hausdorff", "assd", "unit"}` with
    unit "mm" when `spacing` is given, else "px".
  """
  pred = np.asarray(pred)
  gt = np.asarray(gt)
  if pred.ndim != 3 or pred.shape != gt.shape:
    raise ValueError(
        f"pred and gt must both be [O, H, W] with equal shapes, got {pred.shape} and "
        f"{gt.shape}.")
  if len(organ_names) != pred.shape[0]:
    raise ValueError(
        f"{len(organ_names)} organ names for {pred.shape[0]} mask channels; pass one name "
        "per channel.")
  unit = "px" if spacing is None else "mm"
  rows = []
  for i, name in enumerate(organ_names):
    rows.append({
        "organ": name,
        "dice": dice(pred[i], gt[i]),
        "hausdorff": hausdorff(pred[i], gt[i], spacing),
        "assd": assd(pred[i], gt[i], spacing),
        "unit": unit,
    })
  return rows


def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """Aggregate per-image metric rows per organ.

  NaN distances (exactly one mask empty) are left out of the means and
  standard deviations and counted in `missing_distances`. Standard
  deviations are population values (ddof 0). A statistic with no finite
  value is NaN.

  Args:
    rows: rows from `evaluate_organs`, any number of images.

  Returns:
    organ -> `{"dice_mean", "dice_std", "hausdorff_mean", "hausdorff_std",
    "assd_mean", "assd_std", "count", "missing_distances", "unit"}`, organs in
    order of first appearance.

  Raises:
    ValueError: rows of one organ mix "mm" and "px".
  """
  grouped: dict[str, list[dict[str, Any]]] = {}
  for row in rows:
    grouped.setdefault(row["organ"], []).append(row)

  summary = {}
  for organ, organ_rows in grouped.items():
    units = sorted({row["unit"] for row in organ_rows})
    if len(units) > 1:
      raise ValueError(
          f"organ '{organ}': rows mix units {units}; evaluate all images with spacing or "
          "all without it.")
    entry: dict[str, Any] = {}
    for key in ("dice", "hausdorff", "assd"):
      values = np.array([row[key] for row in organ_rows], dtype=np.float64)
      finite = values[~np.isnan(values)]
      entry[f"{key}_mean"] = float(finite.mean()) if finite.size else math.nan
      entry[f"{key}_std"] = float(finite.std()) if finite.size else math.nan
    entry["count"] = len(organ_rows)
    entry["missing_distances"] = sum(
        1 for row in organ_rows if math.isnan(row["hausdorff"]) or math.isnan(row["assd"]))
    entry["unit"] = units[0]
    summary[organ] = entry
  return summary


def _as_mask_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  pred = np.asarray(pred) != 0
  gt = np.asarray(gt) != 0
  if pred.ndim != 2 or pred.shape != gt.shape:
    raise ValueError(
        f"pred and gt must both be [H, W] with equal shapes, got {pred.shape} and "
        f"{gt.shape}.")
  return pred, gt


def _validate_spacing(spacing: Sequence[float] | None) -> tuple[float, float] | None:
  if spacing is None:
    return None
  values = tuple(float(s) for s in np.asarray(spacing, dtype=np.float64).ravel())
  if len(values) != 2 or not all(math.isfinite(s) and s > 0 for s in values):
    raise ValueError(
        f"spacing must be two positive finite numbers (row_mm, col_mm), got {spacing!r}.")
  return values


def _surface(mask: np.ndarray) -> np.ndarray:
  # border_value=0 erodes pixels on the image edge, so they count as surface.
  interior = ndimage.binary_erosion(mask, structure=_FOUR_CONNECTED, border_value=0)
  return mask & ~interior


def _distances_to(
    source: np.ndarray,
    target: np.ndarray,
    sampling: tuple[float, float] | None,
) -> np.ndarray:
  """Distance from each `source` pixel to the nearest `target` pixel; NaN without targets."""
  count = int(source.sum())
  if not target.any():
    return np.full((count,), np.nan)
  if count == 0:
    return np.zeros((0,), dtype=np.float64)
  distance_map = ndimage.distance_transform_edt(~target, sampling=sampling)
  return distance_map[source].astype(np.float64)
