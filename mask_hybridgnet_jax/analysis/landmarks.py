"""Read and write landmark JSON files: `{organ_name: [[x, y], ...]}` in pixels.

`predict` writes one such file per image. A key ending in `_std` contains the
per-node standard deviation of that organ and is not an organ.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np

STD_SUFFIX = "_std"


class LandmarkFileError(ValueError):
  """A landmark JSON file is missing, malformed or lacks an organ."""


def read_landmarks(path: str) -> dict[str, np.ndarray]:
  """Read one landmark JSON file.

  Returns:
    organ name -> float64 `[N, 2]` (x, y) in pixels, in file order. Keys ending
    in `_std` (node standard deviations written by `predict`) are left out.

  Raises:
    LandmarkFileError: the file is not valid JSON, not an object, or an organ's
      value is not a list of `[x, y]` pairs.
  """
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise LandmarkFileError(f"{path}: invalid JSON ({e}).") from e
  if not isinstance(data, dict):
    raise LandmarkFileError(
        f"{path}: expected a JSON object {{organ: [[x, y], ...]}}, got {type(data).__name__}.")
  organs = {}
  for name, value in data.items():
    if name.endswith(STD_SUFFIX):
      continue
    points = np.asarray(value, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
      raise LandmarkFileError(
          f"{path}: organ {name!r} must be a non-empty list of [x, y] pairs, got an array "
          f"of shape {points.shape}.")
    if not np.all(np.isfinite(points)):
      raise LandmarkFileError(f"{path}: organ {name!r} contains non-finite coordinates.")
    organs[name] = points
  return organs


def read_landmark_std(path: str) -> dict[str, np.ndarray]:
  """Read the `{organ}_std` entries of a landmark file: organ -> `[N]` pixels."""
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  return {name[:-len(STD_SUFFIX)]: np.asarray(value, np.float64)
          for name, value in data.items() if name.endswith(STD_SUFFIX)}


def list_landmark_files(folder: str) -> dict[str, str]:
  """Map file stem -> path for every `*.json` in `folder`, sorted by stem.

  Raises:
    FileNotFoundError: `folder` does not exist or contains no JSON file.
  """
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"landmark folder not found: {folder}")
  files = {os.path.splitext(name)[0]: os.path.join(folder, name)
           for name in sorted(os.listdir(folder)) if name.lower().endswith(".json")}
  if not files:
    raise FileNotFoundError(f"no *.json landmark files in {folder}")
  return files


def read_landmark_folder(folder: str) -> dict[str, dict[str, np.ndarray]]:
  """Read every `*.json` in `folder`: stem -> organ -> `[N, 2]`."""
  return {stem: read_landmarks(path) for stem, path in list_landmark_files(folder).items()}


def parse_layout(items: Sequence[str]) -> list[tuple[str, int]]:
  """Parse `organ:count` items, e.g. `["right_lung:44", "left_lung:50"]`."""
  layout = []
  for item in items:
    name, _, count = item.partition(":")
    if not name or not count.isdigit() or int(count) < 1:
      raise ValueError(f"invalid layout item {item!r}; expected organ:count, e.g. right_lung:44.")
    layout.append((name, int(count)))
  return layout


def read_npy_landmarks(path: str, layout: Sequence[tuple[str, int]]) -> dict[str, np.ndarray]:
  """Read a flat `.npy` array of (x, y) values and split it into organs.

  Args:
    path: `.npy` file whose values reshape to `[sum counts, 2]` (for example
      the JSRT contour files: 166 points, right lung 44, left lung 50, heart
      26, right clavicle 23, left clavicle 23).
    layout: `(organ, point count)` in file order.

  Raises:
    LandmarkFileError: the number of values does not match the layout.
  """
  values = np.asarray(np.load(path), np.float64).reshape(-1)
  expected = 2 * sum(count for _, count in layout)
  if values.size != expected:
    raise LandmarkFileError(
        f"{path}: {values.size} values, but the layout {list(layout)} needs {expected}.")
  points = values.reshape(-1, 2)
  organs, start = {}, 0
  for name, count in layout:
    organs[name] = points[start:start + count]
    start += count
  return organs


def read_landmark_folders(
    folders: Sequence[str], npy_layout: Sequence[tuple[str, int]] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
  """Read `*.json` files, or `*.npy` files when `npy_layout` is given, from several folders.

  Returns:
    stem -> organ -> `[N, 2]`, over all folders.

  Raises:
    LandmarkFileError: a stem appears in two folders.
    FileNotFoundError: a folder is missing or has no file of the expected kind.
  """
  records: dict[str, dict[str, np.ndarray]] = {}
  for folder in folders:
    if npy_layout is None:
      found = read_landmark_folder(folder)
    else:
      if not os.path.isdir(folder):
        raise FileNotFoundError(f"landmark folder not found: {folder}")
      names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".npy"))
      if not names:
        raise FileNotFoundError(f"no *.npy landmark files in {folder}")
      found = {os.path.splitext(n)[0]: read_npy_landmarks(os.path.join(folder, n), npy_layout)
               for n in names}
    repeated = sorted(set(found) & set(records))
    if repeated:
      raise LandmarkFileError(f"{folder}: ids {repeated[:5]} also appear in another folder.")
    records.update(found)
  return records


def stack_organ(
    records: Mapping[str, Mapping[str, np.ndarray]],
    stems: Sequence[str],
    organ: str,
    source: str,
) -> np.ndarray:
  """Stack one organ of several files into `[P, N, 2]`.

  Raises:
    LandmarkFileError: a file lacks the organ or its node count differs.
  """
  arrays = []
  for stem in stems:
    if organ not in records[stem]:
      raise LandmarkFileError(
          f"{source}/{stem}: organ {organ!r} is missing; the file has "
          f"{sorted(records[stem])}.")
    arrays.append(records[stem][organ])
  counts = {a.shape[0] for a in arrays}
  if len(counts) != 1:
    raise LandmarkFileError(
        f"{source}: organ {organ!r} has different point counts across files "
        f"({sorted(counts)}); every file must have the same number of points per organ.")
  return np.stack(arrays)


def read_id_list(path: str) -> list[str]:
  """Read ids, one per line; blank lines and `#` comments are skipped.

  An id given as a file name (`a.png`, `dir/a.json`) is reduced to its stem.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"id list not found: {path}")
  ids = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.split("#", 1)[0].strip()
      if line:
        ids.append(os.path.splitext(os.path.basename(line))[0])
  return ids


def concatenate_organs(
    records: Mapping[str, Mapping[str, np.ndarray]],
    organs: Sequence[str],
    source: str,
) -> tuple[np.ndarray, list[slice]]:
  """Join the chosen organs of every file into one shape per file.

  Args:
    records: stem -> organ -> `[N_organ, 2]`.
    organs: organs to join, in this order.
    source: folder name used in messages.

  Returns:
    `([P, sum N_organ, 2], one slice per organ into the node axis)`, files in
    the order of `records`.
  """
  if not organs:
    raise ValueError(f"{source}: no organ chosen.")
  stems = list(records)
  parts = [stack_organ(records, stems, organ, source) for organ in organs]
  slices, start = [], 0
  for part in parts:
    slices.append(slice(start, start + part.shape[1]))
    start += part.shape[1]
  return np.concatenate(parts, axis=1), slices
