"""TFDS builder `sunnybrook`: short-axis cine MRI with left-ventricle contours.

Source: the Sunnybrook Cardiac Data (Radau et al., MIDAS Journal, 2009; CC0
1.0; distributed through the Cardiac Atlas Project), in this layout (TFDS
`manual_dir`):

  link.csv                       patient_id,original_id: DICOM folder -> contour folder
  dicoms/<patient_id>/<n>.dcm    one MR slice per file
  contourfiles/<original_id>/i-contours/IM-0001-NNNN-icontour-manual.txt   endocardium
  contourfiles/<original_id>/o-contours/IM-0001-NNNN-ocontour-manual.txt   epicardium

Contour file `IM-0001-NNNN` belongs to DICOM `int(NNNN).dcm`. It contains one
`x y` pair per line, in pixel coordinates of that slice.

Organs: `lv_cavity` (label 1) is the filled endocardium; `lv_myocardium`
(label 2) is the filled epicardium minus the filled endocardium, present only
on slices with both contours. A slice with only an endocardium has no
myocardium. A slice with only an epicardium is skipped, because without the
endocardium neither organ is known there.

The myocardium is a ring, but a graph target is one closed contour: the
outer boundary tracer ignores the ring's hole, so the lv_myocardium graph
follows the epicardium, and the endocardium is the lv_cavity graph. The
stored mask stays the ring. The metadata lists lv_myocardium before
lv_cavity, so a label map painted organ by organ from the two graphs (as
prediction writes it) fills the epicardium first and the cavity over it,
which gives back the ring.

Each example keeps PixelSpacing as its spacing, and the DICOM slice geometry
so that the slices of a patient can be stacked: `slice_position`
(ImagePositionPatient, mm), `slice_orientation` (ImageOrientationPatient),
`slice_index` (rank of the slice along the slice normal among the listed
slices of that patient, 0 first) and `instance_number` (the DICOM file
number, which also tells the cardiac phase apart). No flips: the left
ventricle's position relative to the right ventricle is fixed.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import tensorflow_datasets as tfds

from mask_hybridgnet_jax import contours
from mask_hybridgnet_jax.datasets import common
from mask_hybridgnet_jax.io import dicom
from mask_hybridgnet_jax.organs import DatasetMetadata, Organ

logger = logging.getLogger(__name__)

LAYOUT = """\
  <manual_dir>/link.csv                    header patient_id,original_id
  <manual_dir>/dicoms/<patient_id>/<n>.dcm
  <manual_dir>/contourfiles/<original_id>/i-contours/IM-0001-NNNN-icontour-manual.txt
  <manual_dir>/contourfiles/<original_id>/o-contours/IM-0001-NNNN-ocontour-manual.txt
Contour file IM-0001-NNNN belongs to dicoms/<patient_id>/<int(NNNN)>.dcm."""

METADATA = DatasetMetadata(organs=(Organ("lv_myocardium", 2), Organ("lv_cavity", 1)))

_CONTOUR_PATTERN = re.compile(r"^IM-\d+-(?P<number>\d+)-(?P<kind>[io])contour-manual\.txt$")
# Slice positions closer than this along the normal are the same slice, in mm.
_SAME_SLICE_MM = 1e-3


class ContourFileError(common.SourceRecordError):
  """A contour text file that is not a list of at least 3 finite `x y` pairs."""


def read_contour_file(path: Path) -> np.ndarray:
  """Read a Sunnybrook contour file as float64 `[P, 2]` (x, y) pixel coordinates.

  Raises:
    ContourFileError: unreadable file, a line that is not two numbers, fewer
      than 3 points, or values that are not finite.
  """
  points = []
  try:
    lines = path.read_text(encoding="utf-8").splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise ContourFileError(f"{path}: cannot read the contour ({e}).") from e
  for line_number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    values = line.split()
    try:
      point = [float(v) for v in values]
    except ValueError:
      point = []
    if len(point) != 2 or not all(math.isfinite(v) for v in point):
      raise ContourFileError(
          f"{path}, line {line_number}: expected two numbers 'x y', got {line.strip()!r}.")
    points.append(point)
  if len(points) < 3:
    raise ContourFileError(
        f"{path}: a contour needs at least 3 points, the file has {len(points)}.")
  return np.asarray(points, np.float64)


def read_link_csv(path: Path) -> dict[str, str]:
  """Read `link.csv` into DICOM folder name -> contour folder name.

  Raises:
    common.DatasetSourceError: other columns, an empty value or a repeated
      patient id.
  """
  links = {}
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    columns = [c.strip() for c in reader.fieldnames or ()]
    if columns != ["patient_id", "original_id"]:
      raise common.DatasetSourceError(
          f"{path}: expected the header patient_id,original_id, got {','.join(columns)}.")
    for line_number, row in enumerate(reader, start=2):
      row = {key.strip(): (value or "").strip() for key, value in row.items() if key is not None}
      patient, original = row["patient_id"], row["original_id"]
      if not patient or not original:
        raise common.DatasetSourceError(
            f"{path}, line {line_number}: patient_id and original_id must both be given.")
      if patient in links:
        raise common.DatasetSourceError(
            f"{path}, line {line_number}: patient_id {patient!r} repeated.")
      links[patient] = original
  return links


def _index_contours(folder: Path, kind: str, skipped: list[dict[str, str]]) -> dict[int, Path]:
  """Return DICOM number -> contour file of one kind ("i" or "o") in `folder`."""
  found: dict[int, Path] = {}
  if not folder.is_dir():
    return found
  for path in sorted(folder.iterdir()):
    if path.name.startswith(".") or not path.is_file():
      continue
    match = _CONTOUR_PATTERN.match(path.name)
    if match is None or match.group("kind") != kind:
      skipped.append({"file": str(path),
                      "reason": f"name does not match IM-0001-NNNN-{kind}contour-manual.txt"})
      continue
    number = int(match.group("number"))
    if number in found:
      raise common.DatasetSourceError(
          f"{folder}: {found[number].name} and {path.name} both belong to DICOM {number}.dcm. "
          "Remove one.")
    found[number] = path
  return found


def _slice_indices(headers: dict[int, Any]) -> dict[int, int]:
  """Rank DICOM numbers by slice position along the slice normal.

  Args:
    headers: DICOM number -> (ImagePositionPatient, ImageOrientationPatient),
      either None when the file lacks it.

  Returns:
    DICOM number -> slice index (0 first; equal positions share an index);
    files without geometry are left out.
  """
  distances = {}
  for number, (position, orientation) in headers.items():
    if position is None or orientation is None:
      continue
    row_direction = np.asarray(orientation[:3], np.float64)
    column_direction = np.asarray(orientation[3:], np.float64)
    normal = np.cross(row_direction, column_direction)
    distances[number] = float(np.dot(np.asarray(position, np.float64), normal))
  levels: list[float] = []
  for distance in sorted(distances.values()):
    if not levels or distance - levels[-1] > _SAME_SLICE_MM:
      levels.append(distance)
  return {number: int(np.argmin(np.abs(np.asarray(levels) - distance)))
          for number, distance in distances.items()}


def _read_geometry(path: Path) -> tuple[Any, Any]:
  """Return (ImagePositionPatient, ImageOrientationPatient) of a DICOM file, without pixels."""
  with warnings.catch_warnings():
    # pydicom warns about the Sunnybrook UIDs (components with leading
    # zeros); the geometry read here does not depend on them.
    warnings.simplefilter("ignore", UserWarning)
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    position = dataset.get("ImagePositionPatient")
    orientation = dataset.get("ImageOrientationPatient")
  position = None if position is None or len(position) != 3 else [float(v) for v in position]
  orientation = (None if orientation is None or len(orientation) != 6
                 else [float(v) for v in orientation])
  return position, orientation


class Sunnybrook(common.MaskDatasetBuilder):
  """Sunnybrook short-axis cine MRI with left-ventricle cavity and myocardium."""

  name = "sunnybrook"
  MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT

  @classmethod
  def extra_features(cls) -> dict[str, tfds.features.FeatureConnector]:
    return {
        # ImagePositionPatient (x, y, z) of the first pixel in mm; NaN when missing.
        "slice_position": tfds.features.Tensor(shape=(3,), dtype=np.float32),
        # ImageOrientationPatient: row then column direction cosines; NaN when missing.
        "slice_orientation": tfds.features.Tensor(shape=(6,), dtype=np.float32),
        # Rank along the slice normal within the patient; -1 without geometry.
        "slice_index": tfds.features.Tensor(shape=(), dtype=np.int32),
        # The DICOM file number n of dicoms/<patient_id>/<n>.dcm.
        "instance_number": tfds.features.Tensor(shape=(), dtype=np.int32),
    }

  def _dataset_metadata(self, manual_dir: Path) -> DatasetMetadata:
    return METADATA

  def _list_sources(self, manual_dir: Path) -> common.SourceListing:
    link_path = manual_dir / "link.csv"
    for required in (link_path, manual_dir / "dicoms", manual_dir / "contourfiles"):
      if not required.exists():
        raise common.DatasetSourceError(
            f"{manual_dir}: {required.name} not found. Expected layout:\n{LAYOUT}")
    links = read_link_csv(link_path)

    records = []
    skipped: list[dict[str, str]] = []
    for patient, original in sorted(links.items()):
      records.extend(self._list_patient(manual_dir, patient, original, skipped))
    for entry in skipped:
      logger.warning("Skipping %s: %s.", entry["file"], entry["reason"])
    return common.SourceListing(
        records=tuple(records), skipped=tuple(skipped), extra_files=(link_path,))

  def _list_patient(
      self, manual_dir: Path, patient: str, original: str, skipped: list[dict[str, str]],
  ) -> list[common.SourceRecord]:
    """List the contoured slices of one patient, appending skipped files to `skipped`."""
    dicom_folder = manual_dir / "dicoms" / patient
    contour_folder = manual_dir / "contourfiles" / original
    for folder in (dicom_folder, contour_folder):
      if not folder.is_dir():
        skipped.append({"file": str(folder),
                        "reason": f"folder not found, so patient {patient} is left out"})
        return []
    dicom_paths, dicom_skipped = common.index_files(dicom_folder, (".dcm",), "DICOM")
    skipped.extend(dicom_skipped)
    endocardium = _index_contours(contour_folder / "i-contours", "i", skipped)
    epicardium = _index_contours(contour_folder / "o-contours", "o", skipped)

    by_number = {}
    for stem, path in dicom_paths.items():
      if not stem.isdigit():
        skipped.append({"file": str(path), "reason": "name is not <n>.dcm"})
      else:
        by_number[int(stem)] = path

    headers = {}
    for number in sorted(by_number):
      path = by_number[number]
      if number not in endocardium:
        reason = ("epicardium contour without an endocardium contour" if number in epicardium
                  else "no contour file")
        skipped.append({"file": str(path), "reason": reason})
        continue
      try:
        headers[number] = _read_geometry(path)
      except (OSError, pydicom.errors.InvalidDicomError, ValueError) as e:
        skipped.append({"file": str(path), "reason": f"unreadable DICOM header ({e})"})
    for number, path in sorted({**endocardium, **epicardium}.items()):
      if number not in by_number:
        skipped.append({"file": str(path), "reason": f"no DICOM {dicom_folder.name}/{number}.dcm"})

    slice_indices = _slice_indices(headers)
    records = []
    for number in sorted(headers):
      extra_paths = (endocardium[number],)
      if number in epicardium:
        extra_paths += (epicardium[number],)
      records.append(common.SourceRecord(
          example_id=f"{patient}_{number:04d}",
          patient_id=patient,
          image_path=by_number[number],
          mask_path=None,
          extra_paths=extra_paths,
          attributes={"instance_number": number,
                      "slice_index": slice_indices.get(number, -1)},
      ))
    return records

  def read_record(
      self, record: common.SourceRecord, metadata: DatasetMetadata) -> common.RecordData:
    del metadata
    with warnings.catch_warnings():
      # As in `_read_geometry`: the invalid UIDs do not affect the pixels.
      warnings.simplefilter("ignore", UserWarning)
      image = dicom.read_dicom(record.image_path)
    if image.pixels.ndim != 2:
      raise common.SourceRecordError(
          f"{record.image_path}: expected one 2-D slice, got pixel data of shape "
          f"{image.pixels.shape}.")
    shape = image.pixels.shape
    cavity = contours.fill_polygon(read_contour_file(record.extra_paths[0]), shape)
    label_map = np.zeros(shape, np.int32)
    if len(record.extra_paths) > 1:
      epicardium = contours.fill_polygon(read_contour_file(record.extra_paths[1]), shape)
      label_map[epicardium & ~cavity] = 2
    label_map[cavity] = 1

    def as_floats(values, count):
      if values is None:
        return np.full((count,), np.nan, np.float32)
      return np.asarray(values, np.float32)

    return common.RecordData(
        image=image.pixels,
        label_map=label_map,
        spacing=image.spacing,
        extra={
            "slice_position": as_floats(image.slice_position, 3),
            "slice_orientation": as_floats(image.slice_orientation, 6),
            "slice_index": np.int32(record.attributes["slice_index"]),
            "instance_number": np.int32(record.attributes["instance_number"]),
        },
    )
