"""Atomic file writers: a reader sees either the old file or the complete new one.

Each writer writes a temporary file in the destination folder, flushes and
fsyncs it, then renames it over the destination with `os.replace`, which is
atomic on POSIX and Windows when both paths are on the same file system.
Parent folders are created as needed.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from typing import Any

import numpy as np
from PIL import Image


def _current_umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


# Read once at import: `os.umask` can only be read by setting it, which is not
# thread-safe, and the process umask rarely changes after start-up.
_UMASK = _current_umask()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
  """Write `data` to `path` atomically, creating parent folders.

  The new file gets the permissions of a normally created file (0o666 minus
  the process umask), not the 0o600 of a temporary file.
  """
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, temp_path = tempfile.mkstemp(
      dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(temp_path, 0o666 & ~_UMASK)
    os.replace(temp_path, path)
  except BaseException:
    try:
      os.unlink(temp_path)
    except FileNotFoundError:
      pass
    raise
  _fsync_folder(folder)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
  """Write `text` to `path` atomically as UTF-8."""
  write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
  """Write `obj` as JSON (indent 2, keys in insertion order) atomically.

  NaN becomes `null`, because JSON has no NaN. NumPy scalars and arrays are
  converted to Python numbers and lists.

  Raises:
    ValueError: `obj` contains an infinite value (JSON cannot store it, and
      writing null would hide it); the message gives its location.
    TypeError: `obj` contains a value that JSON cannot represent.
  """
  cleaned = _to_json_value(obj, "$")
  text = json.dumps(cleaned, indent=2, sort_keys=False, allow_nan=False)
  write_text_atomic(path, text + "\n")


def write_png_atomic(path: str | os.PathLike[str], array: np.ndarray) -> None:
  """Encode `array` as PNG and write it atomically.

  Args:
    path: destination file.
    array: uint8 or uint16 `[H, W]` (grayscale), or uint8 `[H, W, 3]` (RGB)
      or `[H, W, 4]` (RGBA).

  Raises:
    ValueError: unsupported dtype or shape; the message names `path`.
  """
  path = os.fspath(path)
  array = np.asarray(array)
  if array.ndim == 2 and array.dtype in (np.uint8, np.uint16):
    image = Image.fromarray(np.ascontiguousarray(array))
  elif array.ndim == 3 and array.shape[-1] in (3, 4) and array.dtype == np.uint8:
    image = Image.fromarray(np.ascontiguousarray(array))
  else:
    raise ValueError(
        f"{path}: cannot write a PNG from an array of dtype {array.dtype} and shape "
        f"{array.shape}; expected uint8 or uint16 [H, W], or uint8 [H, W, 3] or [H, W, 4]. "
        "Convert masks with .astype(np.uint8).")
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  write_bytes_atomic(path, buffer.getvalue())


def _fsync_folder(folder: str) -> None:
  """Flush the rename to disk; skipped where folders cannot be opened (Windows)."""
  try:
    fd = os.open(folder, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _to_json_value(value: Any, location: str) -> Any:
  """Return a copy of `value` that `json.dumps(allow_nan=False)` accepts."""
  if isinstance(value, dict):
    return {key: _to_json_value(item, f"{location}.{key}") for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_to_json_value(item, f"{location}[{i}]") for i, item in enumerate(value)]
  if isinstance(value, np.ndarray):
    return _to_json_value(value.tolist(), location)
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, (float, np.floating)):
    number = float(value)
    if math.isnan(number):
      return None
    if math.isinf(number):
      raise ValueError(
          f"cannot write {number} at {location} as JSON; JSON has no infinity. "
          "Replace it with a finite value or None.")
    return number
  return value
