"""A small MetaImage (`.mha`, `.mhd` + raw) reader that checks the header.

MetaImage is the ITK file format: a text header of `Key = Value` lines, the
last of which is `ElementDataFile`, followed by binary pixel data. With
`ElementDataFile = LOCAL`, the data follows the header in the same file, as
in the usual `.mha`. Otherwise `ElementDataFile` names a raw file relative
to the header's folder, as in the usual `.mhd` + `.raw` pair.

Header keys this reader uses:

- `NDims`: number of spatial axes, >= 1.
- `DimSize`: one size per axis in ITK order (x = column first, then y = row,
  then z = slice), so the numpy shape is the reverse.
- `ElementType`: MET_UCHAR, MET_CHAR, MET_USHORT, MET_SHORT, MET_UINT,
  MET_INT, MET_FLOAT or MET_DOUBLE.
- `ElementNumberOfChannels`: values per pixel (default 1). Channels are
  interleaved per pixel in the file and become the last numpy axis.
- `BinaryDataByteOrderMSB`, `ByteOrderMSB` or `ElementByteOrderMSB`: True
  for big-endian data (default False).
- `CompressedData` (zlib when True) with the optional `CompressedDataSize`
  in bytes.
- `HeaderSize`: bytes to skip at the start of a detached data file, or -1 to
  read the data from the end of that file.
- `ElementSpacing` (or the older `ElementSize`): pixel size per axis in ITK
  order, conventionally in mm.
- `BinaryData` and `ObjectType`, when present, must be True and Image.

Other keys (TransformMatrix, Offset, AnatomicalOrientation, ...) are kept in
`MetaImage.header` unchecked. Anything else the reader cannot honour raises
`MetaImageError` naming the file, the key and the value.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import zlib

import numpy as np

from mask_hybridgnet_jax.io.images import ImageReadError

logger = logging.getLogger(__name__)

# MetaImage element types and their little-endian numpy dtypes.
ELEMENT_TYPES = {
    "MET_UCHAR": np.dtype("u1"),
    "MET_CHAR": np.dtype("i1"),
    "MET_USHORT": np.dtype("<u2"),
    "MET_SHORT": np.dtype("<i2"),
    "MET_UINT": np.dtype("<u4"),
    "MET_INT": np.dtype("<i4"),
    "MET_FLOAT": np.dtype("<f4"),
    "MET_DOUBLE": np.dtype("<f8"),
}

_BYTE_ORDER_KEYS = ("BinaryDataByteOrderMSB", "ByteOrderMSB", "ElementByteOrderMSB")

# A header is a few hundred bytes. Stopping the search for `ElementDataFile`
# after this many bytes keeps a binary file given by mistake from being
# scanned to its end.
_MAX_HEADER_BYTES = 1 << 20

# Window bits for zlib.decompressobj that accept both zlib and gzip streams.
_ZLIB_OR_GZIP = 32 + zlib.MAX_WBITS


class MetaImageError(ImageReadError):
  """A MetaImage file is invalid or uses a feature this reader does not support."""


@dataclasses.dataclass(frozen=True)
class MetaImage:
  """Pixel data and header of one MetaImage file.

  Attributes:
    array: pixel values in numpy axis order, the reverse of `DimSize`:
      `[H, W]` for 2-D, `[D, H, W]` for 3-D, with a trailing channel axis
      `[..., C]` when `ElementNumberOfChannels` > 1. The dtype is the
      native-endian form of `ElementType`.
    spacing: pixel size per spatial axis in numpy order (e.g. `(row_mm,
      col_mm)` for 2-D), from `ElementSpacing` or `ElementSize`; None when
      the header has neither.
    header: every header key with its value as written (text).
  """

  array: np.ndarray
  spacing: tuple[float, ...] | None
  header: dict[str, str]


def read_metaimage(path: str | os.PathLike[str]) -> MetaImage:
  """Read a MetaImage file (`.mha`, or a `.mhd` header with its data file).

  Args:
    path: the file that contains the header.

  Returns:
    The pixel array, its spacing and the header.

  Raises:
    MetaImageError: the file is missing, its header is invalid or uses an
      unsupported feature, or the data size does not match the dimensions.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise MetaImageError(f"{path}: file not found.")
  if os.path.isdir(path):
    raise MetaImageError(f"{path}: is a folder, expected a MetaImage file.")
  with open(path, "rb") as f:
    content = f.read()

  header, data_offset = _parse_header(content, path)
  ndims = _read_int(header, "NDims", path, minimum=1)
  shape_xyz = _read_ints(header, "DimSize", ndims, path, minimum=1)
  channels = _read_int(header, "ElementNumberOfChannels", path, minimum=1, default=1)
  dtype = _element_dtype(header, path)
  if _byte_order_msb(header, path):
    dtype = dtype.newbyteorder(">")
  _check_fixed_values(header, path)
  spacing_xyz = _read_spacing(header, ndims, path)

  expected_bytes = math.prod(shape_xyz) * channels * dtype.itemsize
  data, data_name = _read_data_bytes(header, content, data_offset, expected_bytes, path)
  data = _decompress_if_needed(header, data, expected_bytes, path, data_name)
  if len(data) != expected_bytes:
    raise MetaImageError(
        f"{data_name}: pixel data has {len(data)} bytes, but DimSize "
        f"{' '.join(map(str, shape_xyz))} x {channels} channel(s) of {header['ElementType']} "
        f"needs {expected_bytes}. The file is truncated or its header is wrong.")

  shape = tuple(reversed(shape_xyz)) + ((channels,) if channels > 1 else ())
  array = np.frombuffer(data, dtype=dtype).reshape(shape)
  array = array.astype(dtype.newbyteorder("="), copy=True)
  spacing = None if spacing_xyz is None else tuple(reversed(spacing_xyz))
  return MetaImage(array=array, spacing=spacing, header=header)


def _parse_header(content: bytes, path: str) -> tuple[dict[str, str], int]:
  """Parse `Key = Value` lines up to `ElementDataFile`; returns the header and the data offset."""
  header: dict[str, str] = {}
  position = 0
  while position < len(content):
    if position > _MAX_HEADER_BYTES:
      break
    end = content.find(b"\n", position)
    line_end = len(content) if end < 0 else end
    next_position = len(content) if end < 0 else end + 1
    raw_line = content[position:line_end].rstrip(b"\r")
    position = next_position
    if not raw_line.strip():
      continue
    try:
      line = raw_line.decode("ascii")
    except UnicodeDecodeError:
      raise MetaImageError(
          f"{path}: header line {raw_line[:40]!r} is not ASCII text, and no ElementDataFile "
          "line came before it. The file is not a MetaImage or its header is damaged.") from None
    key, separator, value = line.partition("=")
    key = key.strip()
    if not separator or not key:
      raise MetaImageError(
          f"{path}: header line {line[:60]!r} is not of the form 'Key = Value'; the file is "
          "not a MetaImage or its header is damaged.")
    if key in header:
      raise MetaImageError(f"{path}: header key {key} appears twice.")
    header[key] = value.strip()
    if key == "ElementDataFile":
      return header, position
  raise MetaImageError(
      f"{path}: no ElementDataFile line found in the header; a MetaImage header must end "
      "with 'ElementDataFile = LOCAL' or the name of its data file.")


def _read_int(header: dict[str, str], key: str, path: str, minimum: int,
              default: int | None = None) -> int:
  if key not in header:
    if default is None:
      raise MetaImageError(f"{path}: header key {key} is missing.")
    return default
  value = header[key]
  try:
    number = int(value)
  except ValueError:
    raise MetaImageError(f"{path}: header key {key} = {value!r} is not an integer.") from None
  if number < minimum:
    raise MetaImageError(f"{path}: header key {key} = {value} must be at least {minimum}.")
  return number


def _read_ints(header: dict[str, str], key: str, count: int, path: str,
               minimum: int) -> tuple[int, ...]:
  if key not in header:
    raise MetaImageError(f"{path}: header key {key} is missing.")
  value = header[key]
  try:
    numbers = tuple(int(item) for item in value.split())
  except ValueError:
    raise MetaImageError(f"{path}: header key {key} = {value!r} must be integers.") from None
  if len(numbers) != count:
    raise MetaImageError(
        f"{path}: header key {key} = {value!r} has {len(numbers)} values, but NDims = {count}.")
  if any(number < minimum for number in numbers):
    raise MetaImageError(
        f"{path}: header key {key} = {value!r} has a value below {minimum}.")
  return numbers


def _read_bool(header: dict[str, str], key: str, path: str) -> bool | None:
  if key not in header:
    return None
  value = header[key]
  if value.lower() in ("true", "1"):
    return True
  if value.lower() in ("false", "0"):
    return False
  raise MetaImageError(f"{path}: header key {key} = {value!r} must be True or False.")


def _element_dtype(header: dict[str, str], path: str) -> np.dtype:
  if "ElementType" not in header:
    raise MetaImageError(f"{path}: header key ElementType is missing.")
  value = header["ElementType"]
  if value not in ELEMENT_TYPES:
    raise MetaImageError(
        f"{path}: header key ElementType = {value} is not supported; supported types are "
        f"{', '.join(ELEMENT_TYPES)}. Convert the file, e.g. with SimpleITK.")
  return ELEMENT_TYPES[value]


def _byte_order_msb(header: dict[str, str], path: str) -> bool:
  """Return True for big-endian data; the byte-order keys, when several are given, must agree."""
  given = {key: _read_bool(header, key, path) for key in _BYTE_ORDER_KEYS if key in header}
  if len(set(given.values())) > 1:
    listed = ", ".join(f"{key} = {header[key]}" for key in given)
    raise MetaImageError(f"{path}: header keys disagree on the byte order ({listed}).")
  return bool(next(iter(given.values()), False))


def _check_fixed_values(header: dict[str, str], path: str) -> None:
  """Reject ObjectType other than Image and text (BinaryData = False) pixel data."""
  object_type = header.get("ObjectType", "Image")
  if object_type != "Image":
    raise MetaImageError(
        f"{path}: header key ObjectType = {object_type} is not supported; only Image "
        "objects can be read.")
  if _read_bool(header, "BinaryData", path) is False:
    raise MetaImageError(
        f"{path}: header key BinaryData = False (pixel values stored as text) is not "
        "supported. Save the image with binary data.")


def _read_spacing(header: dict[str, str], ndims: int, path: str) -> tuple[float, ...] | None:
  key = "ElementSpacing" if "ElementSpacing" in header else "ElementSize"
  if key not in header:
    return None
  value = header[key]
  try:
    numbers = tuple(float(item) for item in value.split())
  except ValueError:
    raise MetaImageError(f"{path}: header key {key} = {value!r} must be numbers.") from None
  if len(numbers) != ndims:
    raise MetaImageError(
        f"{path}: header key {key} = {value!r} has {len(numbers)} values, but NDims = {ndims}.")
  if not all(math.isfinite(number) and number > 0 for number in numbers):
    raise MetaImageError(
        f"{path}: header key {key} = {value!r} must hold finite positive pixel sizes.")
  return numbers


def _read_data_bytes(header: dict[str, str], content: bytes, data_offset: int,
                     expected_bytes: int, path: str) -> tuple[bytes, str]:
  """Return the stored (possibly compressed) data bytes and the name of the file holding them."""
  data_file = header["ElementDataFile"]
  if data_file.upper() == "LOCAL":
    header_size = _read_int(header, "HeaderSize", path, minimum=-1, default=0)
    if header_size != 0:
      raise MetaImageError(
          f"{path}: header key HeaderSize = {header_size} together with ElementDataFile = "
          "LOCAL is not supported; the data must follow the header directly.")
    return content[data_offset:], path

  if data_file.upper() == "LIST" or "%" in data_file or not data_file:
    raise MetaImageError(
        f"{path}: header key ElementDataFile = {data_file!r} is not supported; only LOCAL "
        "or the name of one data file can be read.")
  data_path = os.path.join(os.path.dirname(os.path.abspath(path)), data_file)
  if not os.path.isfile(data_path):
    raise MetaImageError(
        f"{path}: data file {data_file!r} named by ElementDataFile not found at {data_path}. "
        "Keep the .mhd header and its data file in the same folder.")
  with open(data_path, "rb") as f:
    data = f.read()

  header_size = _read_int(header, "HeaderSize", path, minimum=-1, default=0)
  if header_size > len(data):
    raise MetaImageError(
        f"{data_path}: header key HeaderSize = {header_size} in {path} exceeds the data file "
        f"size of {len(data)} bytes.")
  if header_size == -1:
    # HeaderSize = -1 means the pixel data fills the end of the file, after a
    # header of unknown length; only uncompressed data can be located this way.
    if _read_bool(header, "CompressedData", path):
      raise MetaImageError(
          f"{path}: header key HeaderSize = -1 cannot be used with CompressedData = True.")
    return data[max(len(data) - expected_bytes, 0):], data_path
  return data[header_size:], data_path


def _decompress_if_needed(header: dict[str, str], data: bytes, expected_bytes: int, path: str,
                          data_name: str) -> bytes:
  """Inflate zlib or gzip data when CompressedData = True; other data is returned as is."""
  if not _read_bool(header, "CompressedData", path):
    return data

  if "CompressedDataSize" in header:
    compressed_size = _read_int(header, "CompressedDataSize", path, minimum=1)
    if compressed_size != len(data):
      raise MetaImageError(
          f"{data_name}: header key CompressedDataSize = {compressed_size} in {path}, but "
          f"{len(data)} bytes of compressed data follow. The file is truncated or its "
          "header is wrong.")
  inflater = zlib.decompressobj(_ZLIB_OR_GZIP)
  try:
    # Inflating one byte more than needed is enough to detect oversized data
    # without decompressing a stream of unbounded size.
    inflated = inflater.decompress(data, expected_bytes + 1)
  except zlib.error as e:
    raise MetaImageError(
        f"{data_name}: compressed pixel data cannot be inflated ({e}); the file is "
        "truncated or damaged.") from None
  if len(inflated) == expected_bytes and not inflater.eof:
    raise MetaImageError(
        f"{data_name}: compressed pixel data ends before the end of its zlib stream; the "
        "file is truncated.")
  return inflated
