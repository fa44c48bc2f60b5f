"""Surface meshes from contours of one organ on parallel slices.

Node i of the contour on one slice is linked to node i on the next slice,
which is meaningful because node i marks the same anatomical place on every
slice. Consecutive rings are joined by two triangles per node pair (the side
wall). Each end ring is closed by a fan of triangles around its area
centroid (the caps). The result is a closed, consistently oriented mesh, so
its enclosed volume is the signed tetrahedron sum `sum v0 . (v1 x v2) / 6`.

Coordinates are millimetres: `X = x * col_mm`, `Y = y * row_mm` and `Z` the
slice position along the stack axis. This assumes the slices are parallel
and share one in-plane pixel grid, as short-axis cine MRI stacks do.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Sequence

import numpy as np

from mask_hybridgnet_jax.contours import signed_area
from mask_hybridgnet_jax.io.atomic import write_text_atomic

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SurfaceMesh:
  """A closed triangle mesh.

  Attributes:
    vertices: `[V, 3]` float64 (X, Y, Z) in mm.
    faces: `[F, 3]` int64 vertex indices, counter-clockwise seen from outside.
  """

  vertices: np.ndarray
  faces: np.ndarray

  def volume_mm3(self) -> float:
    """Return the enclosed volume in mm^3 (the signed tetrahedron sum)."""
    return signed_volume(self.vertices, self.faces)

  def volume_ml(self) -> float:
    """Return the enclosed volume in mL (1 mL = 1000 mm^3)."""
    return self.volume_mm3() / 1000.0


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
  """Return `sum_f v0 . (v1 x v2) / 6`: the enclosed volume, positive for outward faces."""
  v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
  return float(np.sum(np.einsum("ij,ij->i", v0, np.cross(v1, v2))) / 6.0)


def polygon_centroid(points: np.ndarray) -> np.ndarray:
  """Return the area centroid `[2]` of a closed polygon; the vertex mean if its area is 0."""
  points = np.asarray(points, np.float64)
  x, y = points[:, 0], points[:, 1]
  x_next, y_next = np.roll(x, -1), np.roll(y, -1)
  cross = x * y_next - x_next * y
  area = cross.sum() / 2.0
  if area == 0.0:
    return points.mean(axis=0)
  return np.array([np.sum((x + x_next) * cross), np.sum((y + y_next) * cross)]) / (6.0 * area)


def build_surface(
    rings: Sequence[np.ndarray],
    positions_mm: Sequence[float],
    spacing: tuple[float, float],
    organ: str = "organ",
) -> SurfaceMesh:
  """Link contour rings of one organ across slices into a closed surface.

  Args:
    rings: one `[N, 2]` contour (x, y in pixels) per slice, node i corresponding.
    positions_mm: `[Z]` slice positions along the stack axis, mm; any order,
      the rings are sorted by position.
    spacing: `(row_mm, col_mm)` in-plane pixel spacing.
    organ: name used in messages.

  Returns:
    A `SurfaceMesh` with `Z * N + 2` vertices (rings, then the two cap
    centres) and `2 N (Z - 1) + 2 N` faces, oriented so the volume is positive.

  Raises:
    ValueError: fewer than two slices, repeated positions, rings of different
      node counts, or invalid spacing.
  """
  if len(rings) != len(positions_mm):
    raise ValueError(
        f"{organ}: {len(rings)} rings but {len(positions_mm)} slice positions; give one "
        "position per ring.")
  if len(rings) < 2:
    raise ValueError(f"{organ}: a surface needs contours on at least 2 slices, got {len(rings)}.")
  row_mm, col_mm = (float(v) for v in spacing)
  if not (row_mm > 0 and col_mm > 0):
    raise ValueError(f"spacing must be positive (row_mm, col_mm), got {spacing}.")
  rings = [np.asarray(r, np.float64) for r in rings]
  counts = {r.shape for r in rings}
  if len(counts) != 1 or rings[0].ndim != 2 or rings[0].shape[1] != 2 or rings[0].shape[0] < 3:
    raise ValueError(
        f"{organ}: every ring must be [N, 2] with the same N >= 3, got shapes "
        f"{sorted(str(r.shape) for r in rings)}.")
  positions = np.asarray(positions_mm, np.float64)
  order = np.argsort(positions, kind="stable")
  positions = positions[order]
  if np.any(np.diff(positions) == 0):
    raise ValueError(
        f"{organ}: slice positions repeat ({positions.tolist()} mm); each slice needs its own "
        "position.")
  rings = [rings[i] for i in order]
  orientations = {np.sign(signed_area(r)) for r in rings}
  if len(orientations) > 1:
    # A ring turning the other way twists the side wall; the volume is then wrong.
    logger.warning("%s: contours turn different ways on different slices; the side walls "
                   "twist and the volume is unreliable", organ)

  num_slices, num_nodes = len(rings), rings[0].shape[0]
  scale = np.array([col_mm, row_mm])
  ring_vertices = [
      np.column_stack([ring * scale, np.full(num_nodes, z)]) for ring, z in zip(rings, positions)]
  caps = [np.append(polygon_centroid(rings[k]) * scale, positions[k]) for k in (0, -1)]
  vertices = np.concatenate(ring_vertices + [np.stack(caps)])

  node = np.arange(num_nodes)
  following = (node + 1) % num_nodes
  faces = []
  for k in range(num_slices - 1):
    lower, upper = k * num_nodes, (k + 1) * num_nodes
    faces.append(np.stack([lower + node, lower + following, upper + following], axis=1))
    faces.append(np.stack([lower + node, upper + following, upper + node], axis=1))
  bottom_centre, top_centre = num_slices * num_nodes, num_slices * num_nodes + 1
  top = (num_slices - 1) * num_nodes
  faces.append(np.stack([np.full(num_nodes, bottom_centre), following, node], axis=1))
  faces.append(np.stack([np.full(num_nodes, top_centre), top + node, top + following], axis=1))
  faces = np.concatenate(faces).astype(np.int64)
  if signed_volume(vertices, faces) < 0:
    faces = faces[:, ::-1].copy()
  return SurfaceMesh(vertices, faces)


def write_ply(path: str, mesh: SurfaceMesh, comment: str = "") -> None:
  """Write an ASCII PLY file (vertices in mm), atomically."""
  lines = ["ply", "format ascii 1.0"]
  if comment:
    lines.append(f"comment {comment}")
  lines += [
      f"element vertex {len(mesh.vertices)}", "property double x", "property double y",
      "property double z", f"element face {len(mesh.faces)}",
      "property list uchar int vertex_indices", "end_header"]
  lines += [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
  lines += [f"3 {a} {b} {c}" for a, b, c in mesh.faces]
  write_text_atomic(path, "\n".join(lines) + "\n")


def write_obj(path: str, mesh: SurfaceMesh, comment: str = "") -> None:
  """Write a Wavefront OBJ file (vertices in mm, 1-based faces), atomically."""
  lines = [f"# {comment}"] if comment else []
  lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
  lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]
  write_text_atomic(path, "\n".join(lines) + "\n")


def slice_positions_from_dicom(paths: Sequence[str]) -> dict[str, float]:
  """Read each DICOM slice's position along the stack axis, in mm.

  The position is ImagePositionPatient projected on the slice normal, the
  cross product of the row and column direction cosines of
  ImageOrientationPatient. Every file must have the same orientation
  (parallel slices). A file without these attributes falls back to
  SliceLocation.

  Args:
    paths: DICOM files, one per slice.

  Returns:
    file stem -> position in mm.

  Raises:
    ValueError: a file has neither geometry nor SliceLocation, or the
      orientations differ.
  """
  import pydicom

  positions: dict[str, float] = {}
  normal = None
  for path in paths:
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    stem = os.path.splitext(os.path.basename(path))[0]
    origin = dataset.get("ImagePositionPatient")
    cosines = dataset.get("ImageOrientationPatient")
    if origin is not None and cosines is not None and len(origin) == 3 and len(cosines) == 6:
      cosines = np.asarray([float(v) for v in cosines])
      this_normal = np.cross(cosines[:3], cosines[3:])
      if normal is None:
        normal = this_normal
      elif not np.allclose(this_normal, normal, atol=1e-3):
        raise ValueError(
            f"{path}: slice orientation {cosines.tolist()} differs from the first slice's; "
            "the slices must be parallel.")
      positions[stem] = float(np.dot([float(v) for v in origin], normal))
    elif dataset.get("SliceLocation") is not None:
      positions[stem] = float(dataset.SliceLocation)
    else:
      raise ValueError(
          f"{path}: has neither ImagePositionPatient with ImageOrientationPatient nor "
          "SliceLocation; give the slice positions in a CSV file instead.")
  return positions


def dicom_pixel_spacing(path: str) -> tuple[float, float]:
  """Return PixelSpacing `(row_mm, col_mm)` of a DICOM file.

  Raises:
    ValueError: the file has no PixelSpacing.
  """
  import pydicom

  dataset = pydicom.dcmread(path, stop_before_pixels=True)
  spacing = dataset.get("PixelSpacing")
  if spacing is None or len(spacing) != 2:
    raise ValueError(f"{path}: has no PixelSpacing; give --spacing ROW_MM COL_MM.")
  return float(spacing[0]), float(spacing[1])
