"""Contours from masks and masks from contours.

A ground-truth contour is the outer boundary of the largest 8-connected
component of an organ mask: every boundary pixel centre, in border-following
order, as `(x, y)` = (column, row), closed implicitly (the first point is not
repeated) and oriented so that its shoelace area on the stored values is
positive. With y pointing down that is clockwise on screen. Holes are
ignored, smaller components are dropped, and both are reported.

Filling is the inverse: a pixel is inside a polygon when its centre is inside
by the even-odd rule or lies exactly on an edge, so filling the traced contour
of a component without holes gives the component back.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from mask_hybridgnet_jax.organs import Organ

logger = logging.getLogger(__name__)

# 8-connectivity for foreground components.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

# Moore neighbourhood as (row, column) steps, indexed clockwise on screen
# (rows grow downwards): E, SE, S, SW, W, NW, N, NE.
_NEIGHBOUR_STEPS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))
_STEP_TO_DIRECTION = {step: i for i, step in enumerate(_NEIGHBOUR_STEPS)}
_WEST = 4

# Maximum number of values listed in a LabelValueError message.
_MAX_LISTED_VALUES = 20


class DegenerateContourError(ValueError):
  """A mask whose contour encloses no area (a single pixel or a one-pixel-wide line)."""


class LabelValueError(ValueError):
  """A label map contains a value that is neither background (0) nor an organ label."""


@dataclasses.dataclass
class ContourReport:
  """Findings of `extract_contour` for one organ in one mask.

  Attributes:
    source: file or example id the mask came from.
    organ: organ name.
    num_components: 8-connected components in the mask (0 when it is empty).
    dropped_components: components dropped because they were not the largest.
    num_holes: holes in the kept component (ignored by the contour).
    num_points: points in the contour (0 when absent or degenerate).
    degenerate: True when the kept component encloses no area.
  """

  source: str
  organ: str
  num_components: int
  dropped_components: int
  num_holes: int
  num_points: int
  degenerate: bool


def trace_outer_boundary(mask: np.ndarray) -> np.ndarray:
  """Trace the outer boundary of the largest 8-connected component.

  Moore-neighbour border following, starting at the component's topmost,
  then leftmost pixel and moving clockwise on screen. Tracing stops when it
  is about to repeat its first move from the start pixel, so pixels on
  one-pixel-wide necks appear twice (once in each direction). Ties between
  equally large components go to the one whose first pixel comes first in
  raster order.

  Args:
    mask: bool `[H, W]` (nonzero values count as foreground).

  Returns:
    int32 `[P, 2]` boundary pixel centres `(x, y)`, first point not repeated;
    `[0, 2]` for an empty mask.
  """
  component, _, _ = _largest_component(_as_bool_mask(mask))
  if component is None:
    return np.zeros((0, 2), dtype=np.int32)
  return _trace_component(component)


def signed_area(points: np.ndarray) -> float:
  """Return the shoelace area of a closed polygon, in squared coordinate units.

  Computed on the stored `(x, y)` values: positive for a polygon that turns
  counter-clockwise when y points up, i.e. clockwise on screen (y down).

  Args:
    points: `[P, 2]` vertices `(x, y)`; fewer than 3 give 0.
  """
  points = np.asarray(points, dtype=np.float64)
  if points.shape[0] < 3:
    return 0.0
  x, y = points[:, 0], points[:, 1]
  return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def orient_positive(points: np.ndarray) -> np.ndarray:
  """Return `points` ordered so that `signed_area` is positive.

  A polygon with negative area is reversed, keeping its first point first;
  one with zero or positive area is returned unchanged.
  """
  points = np.asarray(points)
  if signed_area(points) < 0:
    return np.concatenate([points[:1], points[:0:-1]], axis=0)
  return points


def polygon_perimeter(points: np.ndarray) -> float:
  """Return the length of the closed polygon through `points` `[P, 2]`, in pixels."""
  points = np.asarray(points, dtype=np.float64)
  if points.shape[0] < 2:
    return 0.0
  edges = np.roll(points, -1, axis=0) - points
  return float(np.sum(np.sqrt(np.sum(edges * edges, axis=1))))


def extract_contour(
    mask: np.ndarray,
    *,
    source: str,
    organ: str,
    skip_degenerate: bool = False,
) -> tuple[np.ndarray | None, ContourReport]:
  """Extract the ground-truth contour of one organ.

  Args:
    mask: bool `[H, W]` organ mask (nonzero values count as foreground).
    source: file or example id, used in messages.
    organ: organ name, used in messages.
    skip_degenerate: when True, a degenerate mask logs a warning and counts
      as absent instead of raising.

  Returns:
    `(contour, report)`: contour is float32 `[P, 2]` `(x, y)` pixel centres
    with positive signed area, or None when the mask is empty or (with
    `skip_degenerate`) degenerate.

  Raises:
    DegenerateContourError: the largest component encloses zero area (a
      single pixel or a one-pixel-wide line) or has fewer than 3 boundary
      points, and `skip_degenerate` is False.
  """
  mask = _as_bool_mask(mask)
  component, num_components, sizes = _largest_component(mask)
  if component is None:
    report = ContourReport(source, organ, 0, 0, 0, 0, False)
    return None, report

  dropped = num_components - 1
  if dropped:
    kept_size = int(sizes.max())
    other_sizes = sorted((int(s) for s in sizes), reverse=True)[1:]
    logger.warning(
        "%s: organ '%s': %d %s dropped; kept the largest of %d (%d px), dropped sizes %s px.",
        source, organ, dropped, "component" if dropped == 1 else "components",
        num_components, kept_size, other_sizes)

  num_holes = _count_holes(component)
  if num_holes:
    logger.warning(
        "%s: organ '%s': %d %s ignored; the contour follows the outer boundary only.",
        source, organ, num_holes, "hole" if num_holes == 1 else "holes")

  points = orient_positive(_trace_component(component))
  area = signed_area(points)
  report = ContourReport(
      source=source, organ=organ, num_components=num_components,
      dropped_components=dropped, num_holes=num_holes, num_points=int(points.shape[0]),
      degenerate=False)

  if points.shape[0] < 3 or area == 0.0:
    reason = _degenerate_reason(points, int(sizes.max()))
    report.degenerate = True
    report.num_points = 0
    message = f"{source}: organ '{organ}': degenerate contour ({reason})"
    if not skip_degenerate:
      raise DegenerateContourError(
          message + ". Fix the mask, or skip degenerate organs so that they count as absent.")
    logger.warning("%s; organ treated as absent.", message)
    return None, report

  return points.astype(np.float32), report


def organ_masks(
    label_map: np.ndarray,
    organs: Sequence[Organ],
    *,
    source: str,
) -> np.ndarray:
  """Split a label map into one bool mask per organ.

  Every value must be 0 (background) or an organ label. One exception keeps
  0/255 masks usable: with exactly one organ and values only in {0, 255},
  255 means that organ, so {0, 1} and {0, 255} maps give identical masks.

  Args:
    label_map: integer `[H, W]` label values.
    organs: organs in channel order.
    source: file or example id, used in messages.

  Returns:
    bool `[O, H, W]`, channel i for `organs[i]`.

  Raises:
    LabelValueError: a value is neither 0 nor an organ label; the message
      lists the values found and the organs expected.
  """
  label_map = np.asarray(label_map)
  if label_map.ndim != 2:
    raise ValueError(f"{source}: label map must be 2-D [H, W], got shape {label_map.shape}.")
  if not (np.issubdtype(label_map.dtype, np.integer) or label_map.dtype == np.bool_):
    raise ValueError(
        f"{source}: label map must have an integer dtype, got {label_map.dtype}.")
  labels = np.array([o.label for o in organs], dtype=np.int64)
  values = np.unique(label_map).astype(np.int64)

  if len(organs) == 1 and labels[0] != 255 and set(values.tolist()) <= {0, 255}:
    labels = np.array([255], dtype=np.int64)

  unknown = np.setdiff1d(values, np.concatenate([[0], labels]))
  if unknown.size:
    expected = ", ".join(f"{o.name}={o.label}" for o in organs)
    raise LabelValueError(
        f"{source}: label map contains value(s) {_list_values(unknown)} that are not organ "
        f"labels. Values found: {_list_values(values)}; expected 0 (background) or an organ "
        f"label ({expected}). Fix the label map or the organs in the dataset metadata.")
  return label_map[None, :, :] == labels[:, None, None]


def fill_polygon(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Rasterise a closed polygon by pixel centres.

  A pixel is inside when its centre is inside by the even-odd rule, or lies
  exactly on an edge (exactly as computed in float64, which is exact for
  integer vertices such as traced contours). The polygon may self-intersect
  and extend past the image.

  Args:
    points: `[P, 2]` vertices `(x, y)` in pixel units, closed implicitly.
    shape: `(H, W)` of the output.

  Returns:
    bool `[H, W]`.
  """
  height, width = int(shape[0]), int(shape[1])
  points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
  if not np.all(np.isfinite(points)):
    raise ValueError("fill_polygon: polygon contains NaN or infinite coordinates.")
  inside = np.zeros((height, width), dtype=bool)
  if points.shape[0] == 0 or height == 0 or width == 0:
    return inside
  start = points
  end = np.roll(points, -1, axis=0)
  inside = _even_odd_interior(start, end, height, width)
  rows, cols = _pixel_centres_on_edges(start, end, height, width)
  inside[rows, cols] = True
  return inside


def fill_polygons(
    polygons: Mapping[str, np.ndarray | None],
    organs: Sequence[Organ | str],
    shape: tuple[int, int],
) -> np.ndarray:
  """Rasterise one polygon per organ with `fill_polygon`.

  Args:
    polygons: organ name -> `[P, 2]` polygon; None or a missing name means
      the organ is absent (an empty mask).
    organs: organs (or organ names) in channel order.
    shape: `(H, W)`.

  Returns:
    bool `[O, H, W]`.

  Raises:
    ValueError: `polygons` names an organ that is not in `organs`.
  """
  names = [o if isinstance(o, str) else o.name for o in organs]
  unknown = sorted(set(polygons) - set(names))
  if unknown:
    raise ValueError(f"polygons for unknown organ(s) {unknown}; known organs are {names}.")
  masks = np.zeros((len(names), int(shape[0]), int(shape[1])), dtype=bool)
  for i, name in enumerate(names):
    polygon = polygons.get(name)
    if polygon is not None:
      masks[i] = fill_polygon(polygon, shape)
  return masks


def _as_bool_mask(mask: np.ndarray) -> np.ndarray:
  mask = np.asarray(mask)
  if mask.ndim != 2:
    raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}.")
  return mask if mask.dtype == np.bool_ else mask != 0


def _largest_component(mask: np.ndarray) -> tuple[np.ndarray | None, int, np.ndarray]:
  """Return (largest 8-connected component, number of components, their sizes)."""
  labelled, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
  if count == 0:
    return None, 0, np.zeros((0,), dtype=np.int64)
  sizes = np.bincount(labelled.ravel(), minlength=count + 1)[1:]
  # Labels are numbered in raster order of each component's first pixel, so
  # argmax breaks ties towards the component that starts first.
  largest = int(np.argmax(sizes)) + 1
  return labelled == largest, count, sizes


def _count_holes(component: np.ndarray) -> int:
  """Count background regions (4-connected) that the component encloses."""
  filled = ndimage.binary_fill_holes(component)
  _, count = ndimage.label(filled & ~component)
  return int(count)


def _trace_component(component: np.ndarray) -> np.ndarray:
  """Moore-neighbour tracing of one 8-connected component; int32 `[P, 2]` `(x, y)`."""
  rows, cols = np.nonzero(component)
  top, left = int(rows.min()), int(cols.min())
  bottom, right = int(rows.max()), int(cols.max())
  # Crop to the bounding box with a one-pixel background border, so that
  # every neighbour lookup stays in bounds, and work on flat indices.
  crop = np.zeros((bottom - top + 3, right - left + 3), dtype=np.uint8)
  crop[1:-1, 1:-1] = component[top:bottom + 1, left:right + 1]
  width = crop.shape[1]
  pixels = crop.tobytes()
  offsets = [dr * width + dc for dr, dc in _NEIGHBOUR_STEPS]
  # After a move in direction d, the new pixel's backtrack is the last
  # background pixel examined, the old pixel's neighbour at d - 1. This
  # table gives its direction as seen from the new pixel.
  backtrack_after_move = [
      _STEP_TO_DIRECTION[(_NEIGHBOUR_STEPS[(d - 1) % 8][0] - _NEIGHBOUR_STEPS[d][0],
                          _NEIGHBOUR_STEPS[(d - 1) % 8][1] - _NEIGHBOUR_STEPS[d][1])]
      for d in range(8)
  ]

  # np.nonzero is in raster order, so the first pixel is the topmost-leftmost;
  # its west neighbour is background.
  start = (int(rows[0]) - top + 1) * width + (int(cols[0]) - left + 1)
  path = [start]
  current, backtrack = start, _WEST
  first_move = None
  while True:
    move = None
    for k in range(1, 8):
      direction = (backtrack + k) % 8
      if pixels[current + offsets[direction]]:
        move = direction
        break
    if move is None:
      break  # An isolated pixel.
    if current == start and move == first_move:
      path.pop()  # The start pixel was appended again on arrival.
      break
    if first_move is None:
      first_move = move
    current += offsets[move]
    backtrack = backtrack_after_move[move]
    path.append(current)

  flat = np.asarray(path, dtype=np.int64)
  xs = flat % width - 1 + left
  ys = flat // width - 1 + top
  return np.stack([xs, ys], axis=1).astype(np.int32)


def _degenerate_reason(points: np.ndarray, component_size: int) -> str:
  if component_size == 1:
    return "a single pixel"
  if points.shape[0] < 3:
    return f"only {points.shape[0]} boundary points"
  return f"zero enclosed area: a one-pixel-wide line of {component_size} pixels"


def _list_values(values: np.ndarray) -> str:
  listed = ", ".join(str(int(v)) for v in values[:_MAX_LISTED_VALUES])
  if values.size > _MAX_LISTED_VALUES:
    listed += f", ... ({values.size} values in all)"
  return "[" + listed + "]"


def _even_odd_interior(
    start: np.ndarray, end: np.ndarray, height: int, width: int) -> np.ndarray:
  """Pixels whose centre is inside by the even-odd rule; bool `[H, W]`.

  For every row a ray from each pixel centre goes towards +x and counts the
  edges it crosses. An edge crosses row r when `min(y0, y1) <= r < max(y0, y1)`
  (half-open, so a vertex on the row counts once and horizontal edges never).
  Centres exactly on an edge may land either side; the caller adds them.
  """
  y_low = np.minimum(start[:, 1], end[:, 1])
  y_high = np.maximum(start[:, 1], end[:, 1])
  first_row = np.clip(np.ceil(y_low), 0, height).astype(np.int64)
  stop_row = np.clip(np.ceil(y_high), 0, height).astype(np.int64)
  counts = np.maximum(stop_row - first_row, 0)
  edge = np.repeat(np.arange(start.shape[0]), counts)
  row = np.repeat(first_row, counts) + _ranges(counts)

  x0, y0 = start[edge, 0], start[edge, 1]
  x1, y1 = end[edge, 0], end[edge, 1]
  x_cross = x0 + (row - y0) * (x1 - x0) / (y1 - y0)
  # A crossing at x flips the parity of every pixel column c < x, i.e.
  # c < ceil(x). Count crossings per (row, ceil(x)), then suffix-sum. Only
  # the parity matters, and uint8 sums wrap modulo 256, which keeps it.
  column = np.clip(np.ceil(x_cross), 0, width).astype(np.int64)
  crossings = np.zeros((height, width + 1), dtype=np.uint8)
  np.add.at(crossings, (row, column), 1)
  crossings_right = np.cumsum(crossings[:, ::-1], axis=1, dtype=np.uint8)[:, ::-1]
  return (crossings_right[:, 1:] % 2 == 1)


def _pixel_centres_on_edges(
    start: np.ndarray, end: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
  """Return (rows, cols) of pixel centres inside the image lying exactly on an edge."""
  horizontal = start[:, 1] == end[:, 1]

  # Non-horizontal edges: every integer row in [y_low, y_high], then keep
  # the rows where the edge's x is an integer.
  s, e = start[~horizontal], end[~horizontal]
  y_low = np.minimum(s[:, 1], e[:, 1])
  y_high = np.maximum(s[:, 1], e[:, 1])
  first_row = np.clip(np.ceil(y_low), 0, height).astype(np.int64)
  stop_row = np.clip(np.floor(y_high) + 1, 0, height).astype(np.int64)
  counts = np.maximum(stop_row - first_row, 0)
  edge = np.repeat(np.arange(s.shape[0]), counts)
  row_a = np.repeat(first_row, counts) + _ranges(counts)
  x = s[edge, 0] + (row_a - s[edge, 1]) * (e[edge, 0] - s[edge, 0]) / (e[edge, 1] - s[edge, 1])
  on_pixel = (x == np.round(x)) & (x >= 0) & (x < width)
  rows = [row_a[on_pixel]]
  cols = [np.round(x[on_pixel]).astype(np.int64)]

  # Horizontal edges on an integer row: every integer x between the ends.
  s, e = start[horizontal], end[horizontal]
  y = s[:, 1]
  on_row = (y == np.round(y)) & (y >= 0) & (y < height)
  s, e = s[on_row], e[on_row]
  x_low = np.minimum(s[:, 0], e[:, 0])
  x_high = np.maximum(s[:, 0], e[:, 0])
  first_col = np.clip(np.ceil(x_low), 0, width).astype(np.int64)
  stop_col = np.clip(np.floor(x_high) + 1, 0, width).astype(np.int64)
  counts = np.maximum(stop_col - first_col, 0)
  rows.append(np.repeat(np.round(s[:, 1]).astype(np.int64), counts))
  cols.append(np.repeat(first_col, counts) + _ranges(counts))
  return np.concatenate(rows), np.concatenate(cols)


def _ranges(counts: np.ndarray) -> np.ndarray:
  """Concatenate `arange(c)` for each c in `counts`, vectorised."""
  total = int(counts.sum())
  if total == 0:
    return np.zeros((0,), dtype=np.int64)
  ends = np.cumsum(counts)
  starts = np.repeat(ends - counts, counts)
  return np.arange(total, dtype=np.int64) - starts
