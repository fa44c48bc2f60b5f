"""Organ identity and dataset metadata.

Organs are identified by name and label value, never by list position alone:
the order given in the metadata fixes the order of mask channels and of graph
nodes everywhere downstream.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Sequence

_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class MetadataError(ValueError):
  """Invalid dataset metadata; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class Organ:
  """One anatomical structure: its name and its value in label maps."""

  name: str
  label: int


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
  """Organs of a dataset and the geometric augmentations it allows.

  Attributes:
    organs: organs in channel and node order.
    allow_horizontal_flip: mirror left/right. False on chest X-ray, where the
      left and right lungs are different organs.
    allow_vertical_flip: mirror top/bottom.
    allow_transpose: swap rows and columns.
  """

  organs: tuple[Organ, ...]
  allow_horizontal_flip: bool = False
  allow_vertical_flip: bool = False
  allow_transpose: bool = False

  def __post_init__(self):
    validate_organs(self.organs, source="metadata")

  @property
  def organ_names(self) -> tuple[str, ...]:
    return tuple(o.name for o in self.organs)

  @property
  def organ_labels(self) -> tuple[int, ...]:
    return tuple(o.label for o in self.organs)

  def to_dict(self) -> dict[str, Any]:
    return {
        "organs": [{"name": o.name, "label": o.label} for o in self.organs],
        "allow_horizontal_flip": self.allow_horizontal_flip,
        "allow_vertical_flip": self.allow_vertical_flip,
        "allow_transpose": self.allow_transpose,
    }

  @classmethod
  def from_dict(cls, data: Any, source: str = "metadata") -> DatasetMetadata:
    """Build metadata from a parsed JSON object; errors name `source`."""
    if not isinstance(data, dict):
      raise MetadataError(f"{source}: expected a JSON object, got {type(data).__name__}.")
    known = {"organs", "allow_horizontal_flip", "allow_vertical_flip", "allow_transpose"}
    unknown = sorted(set(data) - known)
    if unknown:
      raise MetadataError(
          f"{source}: unknown field(s) {unknown}; valid fields are {sorted(known)}.")
    if "organs" not in data:
      raise MetadataError(
          f'{source}: missing field "organs", for example '
          '[{"name": "right_lung", "label": 1}].')
    raw_organs = data["organs"]
    if not isinstance(raw_organs, list) or not raw_organs:
      raise MetadataError(f'{source}: "organs" must be a non-empty list.')
    organs = []
    for i, entry in enumerate(raw_organs):
      if not isinstance(entry, dict) or set(entry) != {"name", "label"}:
        raise MetadataError(
            f'{source}: organs[{i}] must be an object with exactly "name" and "label", '
            f"got {entry!r}.")
      label = entry["label"]
      if isinstance(label, bool) or not isinstance(label, int):
        raise MetadataError(f"{source}: organs[{i}].label must be an integer, got {label!r}.")
      organs.append(Organ(name=entry["name"], label=label))
    flags = {}
    for key in sorted(known - {"organs"}):
      value = data.get(key, False)
      if not isinstance(value, bool):
        raise MetadataError(f"{source}: {key} must be true or false, got {value!r}.")
      flags[key] = value
    validate_organs(organs, source=source)
    return cls(organs=tuple(organs), **flags)

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> DatasetMetadata:
    path = os.fspath(path)
    try:
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
    except FileNotFoundError:
      raise MetadataError(
          f"{path}: metadata file not found. Create it with the organs and their label "
          'values, for example {"organs": [{"name": "liver", "label": 1}]}.') from None
    except json.JSONDecodeError as e:
      raise MetadataError(f"{path}: invalid JSON ({e}).") from None
    return cls.from_dict(data, source=path)


def validate_organs(organs: Sequence[Organ], source: str) -> None:
  """Raise MetadataError unless names and labels are valid and unique."""
  if not organs:
    raise MetadataError(f"{source}: at least one organ is required.")
  names, labels = set(), set()
  for organ in organs:
    if not isinstance(organ.name, str) or not _NAME_PATTERN.match(organ.name):
      raise MetadataError(
          f"{source}: invalid organ name {organ.name!r}; use letters, digits and "
          "underscores, starting with a letter.")
    if not 1 <= organ.label <= 65535:
      raise MetadataError(
          f"{source}: organ {organ.name!r} has label {organ.label}; labels must be in "
          "1..65535 because 0 is the background.")
    if organ.name in names:
      raise MetadataError(f"{source}: organ name {organ.name!r} appears twice.")
    if organ.label in labels:
      raise MetadataError(f"{source}: label {organ.label} is used by two organs.")
    names.add(organ.name)
    labels.add(organ.label)
