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
