"""Tests for the MetaImage, NIfTI and DICOM readers and the suffix dispatch in io.images."""

from __future__ import annotations

import logging
import zlib

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from mask_hybridgnet_jax.io import dicom
from mask_hybridgnet_jax.io import images
from mask_hybridgnet_jax.io import metaimage
from mask_hybridgnet_jax.io import nifti
from mask_hybridgnet_jax.io.images import ImageReadError

# ----------------------------------------------------------------------------
# MetaImage


def _mha_header(**overrides) -> str:
  """Header text for a 3x2 MET_SHORT image; a value of None drops the key."""
  keys = {
      "ObjectType": "Image",
      "NDims": "2",
      "BinaryData": "True",
      "BinaryDataByteOrderMSB": "False",
      "CompressedData": "False",
      "ElementSpacing": "0.5 2",
      "DimSize": "3 2",
      "ElementType": "MET_SHORT",
      "ElementDataFile": "LOCAL",
  }
  keys.update(overrides)
  data_file = keys.pop("ElementDataFile")
  lines = [f"{key} = {value}" for key, value in keys.items() if value is not None]
  if data_file is not None:
    lines.append(f"ElementDataFile = {data_file}")
  return "\n".join(lines) + "\n"


# Row-major [H=2, W=3] values; DimSize lists W first.
_SHORT_VALUES = np.array([[-300, 0, 7], [1, 2, 32000]], dtype=np.int16)


def _write_mha(path, data: bytes, **overrides):
  path.write_bytes(_mha_header(**overrides).encode("ascii") + data)
  return path


def test_metaimage_real_psfhs_image(data_root):
  paths = sorted((data_root / "psfhs" / "image_mha").glob("*.mha"))[:2]
  if not paths:
    pytest.skip("PSFHS images not found")
  for path in paths:
    image = metaimage.read_metaimage(path)
    assert image.array.shape == (3, 256, 256)
    assert image.array.dtype == np.uint8
    assert image.spacing == (1.0, 1.0, 1.0)
    assert np.array_equal(image.array[0], image.array[1])
    assert np.array_equal(image.array[0], image.array[2])
    np.testing.assert_array_equal(images.read_image(path), image.array[0].astype(np.float32))


def test_metaimage_real_psfhs_label(data_root):
  paths = sorted((data_root / "psfhs" / "label_mha").glob("*.mha"))[:2]
  if not paths:
    pytest.skip("PSFHS labels not found")
  for path in paths:
    image = metaimage.read_metaimage(path)
    assert image.array.shape == (256, 256)
    assert set(np.unique(image.array)) == {0, 1, 2}
    labels = images.read_label_map(path)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, image.array)


def test_metaimage_short_values_and_spacing(tmp_path):
  path = _write_mha(tmp_path / "a.mha", _SHORT_VALUES.astype("<i2").tobytes())
  image = metaimage.read_metaimage(path)
  np.testing.assert_array_equal(image.array, _SHORT_VALUES)
  assert image.array.dtype == np.int16
  # ElementSpacing lists x (column) first; spacing is in numpy order (row, column).
  assert image.spacing == (2.0, 0.5)
  assert image.header["ElementType"] == "MET_SHORT"


def test_metaimage_big_endian(tmp_path):
  path = _write_mha(tmp_path / "a.mha", _SHORT_VALUES.astype(">i2").tobytes(),
                    BinaryDataByteOrderMSB="True")
  np.testing.assert_array_equal(metaimage.read_metaimage(path).array, _SHORT_VALUES)


def test_metaimage_every_element_type(tmp_path):
  for element_type, dtype in metaimage.ELEMENT_TYPES.items():
    values = np.array([[0, 1, 2], [3, 4, 100]], dtype=dtype)
    path = _write_mha(tmp_path / f"{element_type}.mha", values.tobytes(),
                      ElementType=element_type)
    array = metaimage.read_metaimage(path).array
    assert array.dtype == dtype.newbyteorder("="), element_type
    np.testing.assert_array_equal(array, values)


def test_metaimage_zlib_compressed(tmp_path):
  compressed = zlib.compress(_SHORT_VALUES.astype("<i2").tobytes())
  path = _write_mha(tmp_path / "a.mha", compressed, CompressedData="True",
                    CompressedDataSize=str(len(compressed)))
  np.testing.assert_array_equal(metaimage.read_metaimage(path).array, _SHORT_VALUES)


def test_metaimage_compressed_without_size(tmp_path):
  compressed = zlib.compress(_SHORT_VALUES.astype("<i2").tobytes())
  path = _write_mha(tmp_path / "a.mha", compressed, CompressedData="True")
  np.testing.assert_array_equal(metaimage.read_metaimage(path).array, _SHORT_VALUES)


def test_metaimage_detached_raw(tmp_path):
  (tmp_path / "a.raw").write_bytes(_SHORT_VALUES.astype("<i2").tobytes())
  path = _write_mha(tmp_path / "a.mhd", b"", ElementDataFile="a.raw")
  image, spacing = images.read_image_with_spacing(path)
  np.testing.assert_array_equal(image, _SHORT_VALUES.astype(np.float32))
  assert spacing == (2.0, 0.5)


def test_metaimage_detached_header_size(tmp_path):
  (tmp_path / "a.raw").write_bytes(b"JUNK" + _SHORT_VALUES.astype("<i2").tobytes())
  path = _write_mha(tmp_path / "a.mhd", b"", ElementDataFile="a.raw", HeaderSize="4")
  np.testing.assert_array_equal(metaimage.read_metaimage(path).array, _SHORT_VALUES)


def test_metaimage_header_size_minus_one(tmp_path):
  (tmp_path / "a.raw").write_bytes(b"JUNKJUNK" + _SHORT_VALUES.astype("<i2").tobytes())
  path = _write_mha(tmp_path / "a.mhd", b"", ElementDataFile="a.raw", HeaderSize="-1")
  np.testing.assert_array_equal(metaimage.read_metaimage(path).array, _SHORT_VALUES)


def test_metaimage_channels_last(tmp_path):
  # Two pixels of three interleaved channels each.
  values = np.array([[[10, 20, 30], [40, 50, 60]]], dtype=np.uint8)
  path = _write_mha(tmp_path / "a.mha", values.tobytes(), DimSize="2 1",
                    ElementType="MET_UCHAR", ElementNumberOfChannels="3")
  array = metaimage.read_metaimage(path).array
  assert array.shape == (1, 2, 3)
  np.testing.assert_array_equal(array, values)
  expected_luma = values.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(images.read_image(path), expected_luma, rtol=1e-6)


def test_metaimage_equal_channels_read_once(tmp_path):
  values = np.repeat(np.array([[[10], [40]]], dtype=np.uint8), 3, axis=-1)
  path = _write_mha(tmp_path / "a.mha", values.tobytes(), DimSize="2 1",
                    ElementType="MET_UCHAR", ElementNumberOfChannels="3")
  np.testing.assert_array_equal(images.read_image(path), [[10.0, 40.0]])
  np.testing.assert_array_equal(images.read_label_map(path), [[10, 40]])


def test_metaimage_volume_rejected_by_read_image(tmp_path):
  values = np.arange(24, dtype=np.uint8).reshape(4, 2, 3)
  path = _write_mha(tmp_path / "v.mha", values.tobytes(), NDims="3", DimSize="3 2 4",
                    ElementSpacing="1 1 1", ElementType="MET_UCHAR")
  np.testing.assert_array_equal(metaimage.read_metaimage(path).array, values)
  with pytest.raises(ImageReadError, match="read_metaimage for volumes"):
    images.read_image(path)


def test_metaimage_three_unequal_slices_rejected(tmp_path):
  values = np.arange(18, dtype=np.uint8).reshape(3, 2, 3)
  path = _write_mha(tmp_path / "v.mha", values.tobytes(), NDims="3", DimSize="3 2 3",
                    ElementSpacing="1 1 1", ElementType="MET_UCHAR")
  with pytest.raises(ImageReadError, match="3 slices that differ"):
    images.read_image(path)


def test_metaimage_without_spacing(tmp_path):
  path = _write_mha(tmp_path / "a.mha", _SHORT_VALUES.astype("<i2").tobytes(),
                    ElementSpacing=None)
  assert metaimage.read_metaimage(path).spacing is None


@pytest.mark.parametrize("overrides, data_change, message", [
    ({"NDims": None}, None, "NDims is missing"),
    ({"NDims": "two"}, None, "NDims = 'two' is not an integer"),
    ({"NDims": "0"}, None, "NDims = 0 must be at least 1"),
    ({"DimSize": None}, None, "DimSize is missing"),
    ({"DimSize": "3 2 1"}, None, "DimSize = '3 2 1' has 3 values, but NDims = 2"),
    ({"DimSize": "3 0"}, None, "DimSize = '3 0' has a value below 1"),
    ({"ElementType": None}, None, "ElementType is missing"),
    ({"ElementType": "MET_LONG_LONG"}, None, "ElementType = MET_LONG_LONG is not supported"),
    ({"ElementNumberOfChannels": "0"}, None, "ElementNumberOfChannels = 0"),
    ({"BinaryDataByteOrderMSB": "maybe"}, None, "BinaryDataByteOrderMSB = 'maybe'"),
    ({"ByteOrderMSB": "True"}, None, "disagree on the byte order"),
    ({"CompressedData": "yes"}, None, "CompressedData = 'yes'"),
    ({"BinaryData": "False"}, None, "BinaryData = False"),
    ({"ObjectType": "Mesh"}, None, "ObjectType = Mesh"),
    ({"ElementSpacing": "1"}, None, "ElementSpacing = '1' has 1 values"),
    ({"ElementSpacing": "1 -2"}, None, "finite positive"),
    ({"HeaderSize": "10"}, None, "HeaderSize = 10 together with ElementDataFile = LOCAL"),
    ({"ElementDataFile": "LIST"}, None, "ElementDataFile = 'LIST' is not supported"),
    ({"ElementDataFile": "slice%03d.raw 1 3 1"}, None, "is not supported"),
    ({"ElementDataFile": "missing.raw"}, None, "data file 'missing.raw'"),
    ({"ElementDataFile": None}, None, "no ElementDataFile line"),
    ({}, "truncate", "has 10 bytes, but DimSize 3 2"),
    ({}, "extend", "has 14 bytes, but DimSize 3 2"),
])
def test_metaimage_invalid_header(tmp_path, overrides, data_change, message):
  data = _SHORT_VALUES.astype("<i2").tobytes()
  if data_change == "truncate":
    data = data[:-2]
  elif data_change == "extend":
    data = data + b"\0\0"
  path = _write_mha(tmp_path / "bad.mha", data, **overrides)
  with pytest.raises(metaimage.MetaImageError, match=message) as raised:
    metaimage.read_metaimage(path)
  assert str(path) in str(raised.value)


def test_metaimage_compressed_size_mismatch(tmp_path):
  compressed = zlib.compress(_SHORT_VALUES.astype("<i2").tobytes())
  path = _write_mha(tmp_path / "a.mha", compressed[:-3], CompressedData="True",
                    CompressedDataSize=str(len(compressed)))
  with pytest.raises(metaimage.MetaImageError, match="CompressedDataSize"):
    metaimage.read_metaimage(path)


def test_metaimage_compressed_truncated(tmp_path):
  compressed = zlib.compress(_SHORT_VALUES.astype("<i2").tobytes())
  path = _write_mha(tmp_path / "a.mha", compressed[:-6], CompressedData="True")
  with pytest.raises(metaimage.MetaImageError, match="truncated"):
    metaimage.read_metaimage(path)


def test_metaimage_compressed_garbage(tmp_path):
  path = _write_mha(tmp_path / "a.mha", b"not zlib data", CompressedData="True")
  with pytest.raises(metaimage.MetaImageError, match="cannot be inflated"):
    metaimage.read_metaimage(path)


def test_metaimage_binary_file_rejected(tmp_path):
  path = tmp_path / "noise.mha"
  path.write_bytes(bytes(range(256)) * 4)
  with pytest.raises(metaimage.MetaImageError, match="not a MetaImage"):
    metaimage.read_metaimage(path)


def test_metaimage_error_is_image_read_error():
  assert issubclass(metaimage.MetaImageError, ImageReadError)


# ----------------------------------------------------------------------------
# NIfTI


def _save_nifti(path, data: np.ndarray, zooms: tuple[float, ...], unit: str = "mm"):
  image = nib.Nifti1Image(data, affine=np.diag(list(zooms[:3]) + [1.0] * (4 - len(zooms[:3]))))
  image.header.set_zooms(zooms)
  image.header.set_xyzt_units(xyz=unit)
  nib.save(image, str(path))
  return path


def test_nifti_volume_axes_and_spacing(tmp_path):
  rng = np.random.default_rng(0)
  data = rng.normal(size=(4, 3, 2)).astype(np.float32)  # (i, j, k)
  path = _save_nifti(tmp_path / "v.nii", data, (0.5, 0.75, 3.0))
  volume = nifti.read_nifti(path)
  assert volume.array.shape == (2, 3, 4)
  # array[k, j, i] == data[i, j, k], checked element by element.
  for i, j, k in [(0, 0, 0), (3, 1, 0), (2, 2, 1)]:
    assert volume.array[k, j, i] == data[i, j, k]
  assert volume.spacing == (3.0, 0.75, 0.5)
  assert volume.array.dtype == np.float32


def test_nifti_gz_round_trip(tmp_path):
  data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
  path = _save_nifti(tmp_path / "v.nii.gz", data, (1.0, 1.0, 2.5))
  volume = nifti.read_nifti(path)
  np.testing.assert_array_equal(volume.array, np.transpose(data, (2, 1, 0)))
  assert volume.orientation == ("R", "A", "S")


def test_nifti_label_map_keeps_integers(tmp_path):
  data = np.zeros((5, 4, 1), dtype=np.uint8)
  data[1:3, 2, 0] = 2
  path = _save_nifti(tmp_path / "labels.nii.gz", data, (1.0, 1.0, 1.0))
  volume = nifti.read_nifti(path)
  assert volume.array.dtype == np.uint8
  labels = images.read_label_map(path)
  np.testing.assert_array_equal(labels, data[:, :, 0].T)


def test_nifti_2d_image(tmp_path):
  data = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int16)  # (i, j)
  path = _save_nifti(tmp_path / "slice.nii", data, (0.8, 0.6))
  volume = nifti.read_nifti(path)
  assert volume.array.shape == (3, 2)
  assert volume.spacing == pytest.approx((0.6, 0.8))
  image, spacing = images.read_image_with_spacing(path)
  np.testing.assert_array_equal(image, data.T.astype(np.float32))
  assert spacing == pytest.approx((0.6, 0.8))


def test_nifti_scaled_integers_become_float(tmp_path):
  data = np.array([[[1], [2]]], dtype=np.int16)
  image = nib.Nifti1Image(data, np.eye(4))
  image.header.set_slope_inter(0.5, -10.0)
  nib.save(image, str(tmp_path / "s.nii"))
  volume = nifti.read_nifti(tmp_path / "s.nii")
  assert volume.array.dtype == np.float32
  np.testing.assert_allclose(volume.array[0], [[-9.5], [-9.0]])


def test_nifti_micron_units_converted(tmp_path):
  path = _save_nifti(tmp_path / "m.nii", np.zeros((2, 2, 2), np.float32), (500.0, 250.0, 1000.0),
                     unit="micron")
  assert nifti.read_nifti(path).spacing == pytest.approx((1.0, 0.25, 0.5))


def test_nifti_singleton_fourth_axis(tmp_path):
  data = np.arange(12, dtype=np.float32).reshape(3, 2, 2, 1)
  path = _save_nifti(tmp_path / "t.nii", data, (1.0, 1.0, 1.0, 1.0))
  assert nifti.read_nifti(path).array.shape == (2, 2, 3)


def test_nifti_time_series_rejected(tmp_path):
  path = _save_nifti(tmp_path / "t.nii", np.zeros((3, 2, 2, 2), np.float32), (1.0, 1.0, 1.0, 1.0))
  with pytest.raises(nifti.NiftiReadError, match=r"shape \(3, 2, 2, 2\)"):
    nifti.read_nifti(path)


def test_nifti_volume_rejected_by_read_image(tmp_path):
  path = _save_nifti(tmp_path / "v.nii", np.zeros((3, 2, 2), np.float32), (1.0, 1.0, 1.0))
  with pytest.raises(ImageReadError, match="read_nifti for volumes"):
    images.read_image(path)


def test_nifti_not_nifti(tmp_path):
  path = tmp_path / "fake.nii"
  path.write_bytes(b"this is plain text, not a NIfTI header" * 20)
  with pytest.raises(nifti.NiftiReadError, match="fake.nii"):
    nifti.read_nifti(path)


def test_nifti_truncated(tmp_path):
  path = _save_nifti(tmp_path / "v.nii", np.ones((8, 8, 8), np.float32), (1.0, 1.0, 1.0))
  content = path.read_bytes()
  path.write_bytes(content[:-100])
  with pytest.raises(nifti.NiftiReadError, match="v.nii"):
    nifti.read_nifti(path)


def test_nifti_gz_truncated(tmp_path):
  path = _save_nifti(tmp_path / "v.nii.gz", np.arange(512, dtype=np.float32).reshape(8, 8, 8),
                     (1.0, 1.0, 1.0))
  content = path.read_bytes()
  path.write_bytes(content[:len(content) // 2])
  with pytest.raises(nifti.NiftiReadError, match="v.nii.gz"):
    nifti.read_nifti(path)


def test_nifti_missing_file(tmp_path):
  with pytest.raises(nifti.NiftiReadError, match="file not found"):
    nifti.read_nifti(tmp_path / "missing.nii.gz")


# ----------------------------------------------------------------------------
# DICOM


def _dicom(pixels: np.ndarray, photometric: str = "MONOCHROME2", syntax=ExplicitVRLittleEndian,
           **elements) -> Dataset:
  """A minimal Secondary Capture data set holding uint16 `[H, W]` or `[T, H, W]` pixels."""
  meta = FileMetaDataset()
  meta.TransferSyntaxUID = syntax
  meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
  meta.MediaStorageSOPInstanceUID = generate_uid()
  dataset = Dataset()
  dataset.file_meta = meta
  dataset.SOPClassUID = meta.MediaStorageSOPClassUID
  dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  dataset.PatientID = "P001"
  dataset.SeriesInstanceUID = "1.2.3.4"
  dataset.Rows, dataset.Columns = pixels.shape[-2:]
  if pixels.ndim == 3:
    dataset.NumberOfFrames = pixels.shape[0]
  dataset.SamplesPerPixel = 1
  dataset.PhotometricInterpretation = photometric
  dataset.BitsAllocated = 16
  dataset.BitsStored = 16
  dataset.HighBit = 15
  dataset.PixelRepresentation = 0
  dataset.PixelData = pixels.astype("<u2").tobytes()
  for keyword, value in elements.items():
    setattr(dataset, keyword, value)
  return dataset


def _save_dicom(path, dataset: Dataset):
  dataset.save_as(str(path), enforce_file_format=True)
  return path


_STORED = np.array([[0, 100, 200], [300, 400, 1000]], dtype=np.uint16)


def test_dicom_monochrome2_with_metadata(tmp_path):
  path = _save_dicom(tmp_path / "a.dcm", _dicom(
      _STORED, PixelSpacing=[0.7, 0.9], ImagePositionPatient=[1, 2, 3.5],
      ImageOrientationPatient=[1, 0, 0, 0, 1, 0], SliceLocation=3.5, InstanceNumber=7))
  image = dicom.read_dicom(path)
  np.testing.assert_array_equal(image.pixels, _STORED.astype(np.float32))
  assert image.pixels.dtype == np.float32
  assert image.spacing == (0.7, 0.9)
  assert image.slice_position == (1.0, 2.0, 3.5)
  assert image.slice_orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
  assert image.slice_location == 3.5
  assert image.instance_number == 7
  assert image.series_uid == "1.2.3.4"
  assert image.patient_id == "P001"


def test_dicom_rescale_slope_intercept(tmp_path):
  path = _save_dicom(tmp_path / "ct.dcm", _dicom(
      _STORED, RescaleSlope=2.0, RescaleIntercept=-1024.0, PixelSpacing=[1, 1]))
  expected = _STORED.astype(np.float64) * 2.0 - 1024.0
  np.testing.assert_array_equal(dicom.read_dicom(path).pixels, expected.astype(np.float32))


def test_dicom_monochrome1_inverted(tmp_path):
  path = _save_dicom(tmp_path / "cr.dcm", _dicom(_STORED, photometric="MONOCHROME1",
                                                 PixelSpacing=[1, 1]))
  # max + min - value with min 0 and max 1000.
  expected = np.array([[1000, 900, 800], [700, 600, 0]], dtype=np.float32)
  np.testing.assert_array_equal(dicom.read_dicom(path).pixels, expected)
  np.testing.assert_array_equal(images.read_image(path), expected)


def test_dicom_monochrome1_label_map_not_inverted(tmp_path):
  path = _save_dicom(tmp_path / "labels.dcm", _dicom(
      np.array([[0, 1], [2, 0]], dtype=np.uint16), photometric="MONOCHROME1"))
  np.testing.assert_array_equal(images.read_label_map(path), [[0, 1], [2, 0]])


def test_dicom_imager_pixel_spacing_fallback(tmp_path, caplog):
  path = _save_dicom(tmp_path / "dx.dcm", _dicom(_STORED, ImagerPixelSpacing=[0.15, 0.2]))
  with caplog.at_level(logging.INFO, logger=dicom.__name__):
    image = dicom.read_dicom(path)
  assert image.spacing == (0.15, 0.2)
  assert "ImagerPixelSpacing" in caplog.text
  assert "dx.dcm" in caplog.text


def test_dicom_no_spacing_warns(tmp_path, caplog):
  path = _save_dicom(tmp_path / "n.dcm", _dicom(_STORED))
  with caplog.at_level(logging.WARNING, logger=dicom.__name__):
    image, spacing = images.read_image_with_spacing(path)
  assert spacing is None
  assert image.shape == (2, 3)
  assert "n.dcm" in caplog.text


def test_dicom_multi_frame(tmp_path):
  frames = np.stack([_STORED, _STORED + 5, _STORED + 9])
  path = _save_dicom(tmp_path / "mf.dcm", _dicom(frames, PixelSpacing=[1, 1]))
  image = dicom.read_dicom(path)
  assert image.pixels.shape == (3, 2, 3)
  np.testing.assert_array_equal(image.pixels, frames.astype(np.float32))
  with pytest.raises(ImageReadError, match="3 frames"):
    images.read_image(path)


def test_dicom_functional_group_rescale(tmp_path):
  frames = np.stack([_STORED, _STORED])
  dataset = _dicom(frames)
  per_frame = []
  for slope in (1.0, 3.0):
    transform = Dataset()
    transform.RescaleSlope = slope
    transform.RescaleIntercept = 10.0
    group = Dataset()
    group.PixelValueTransformationSequence = [transform]
    per_frame.append(group)
  dataset.PerFrameFunctionalGroupsSequence = per_frame
  measures = Dataset()
  measures.PixelSpacing = [0.4, 0.5]
  shared = Dataset()
  shared.PixelMeasuresSequence = [measures]
  dataset.SharedFunctionalGroupsSequence = [shared]
  image = dicom.read_dicom(_save_dicom(tmp_path / "enh.dcm", dataset))
  np.testing.assert_array_equal(image.pixels[0], _STORED + 10.0)
  np.testing.assert_array_equal(image.pixels[1], _STORED * 3.0 + 10.0)
  assert image.spacing == (0.4, 0.5)


def test_dicom_rgb_to_luma(tmp_path):
  rgb = np.array([[[10, 20, 30], [50, 50, 50]]], dtype=np.uint8)
  dataset = _dicom(np.zeros((1, 2), np.uint16), photometric="RGB")
  dataset.SamplesPerPixel = 3
  dataset.PlanarConfiguration = 0
  dataset.BitsAllocated = dataset.BitsStored = 8
  dataset.HighBit = 7
  dataset.PixelData = rgb.tobytes()
  path = _save_dicom(tmp_path / "rgb.dcm", dataset)
  expected = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(dicom.read_dicom(path).pixels, expected, rtol=1e-6)


def test_dicom_palette_colour_rejected(tmp_path):
  path = _save_dicom(tmp_path / "p.dcm", _dicom(_STORED, photometric="PALETTE COLOR"))
  with pytest.raises(dicom.DicomReadError, match="'PALETTE COLOR' is not supported"):
    dicom.read_dicom(path)


def test_dicom_not_dicom(tmp_path):
  path = tmp_path / "x.dcm"
  path.write_bytes(b"\0" * 300)
  with pytest.raises(dicom.DicomReadError, match="not a DICOM file"):
    dicom.read_dicom(path)


def test_dicom_no_pixel_data(tmp_path):
  dataset = _dicom(_STORED)
  del dataset.PixelData
  path = _save_dicom(tmp_path / "sr.dcm", dataset)
  with pytest.raises(dicom.DicomReadError, match="no pixel data"):
    dicom.read_dicom(path)


def test_dicom_truncated_pixel_data(tmp_path):
  dataset = _dicom(_STORED)
  dataset.PixelData = dataset.PixelData[:6]
  path = _save_dicom(tmp_path / "short.dcm", dataset)
  with pytest.raises(dicom.DicomReadError, match="short.dcm"):
    dicom.read_dicom(path)


def test_dicom_undecodable_syntax(tmp_path):
  dataset = _dicom(_STORED, syntax=JPEGLSLossless)
  dataset.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8" + b"\0" * 20])
  path = _save_dicom(tmp_path / "jls.dcm", dataset)
  with pytest.raises(dicom.DicomReadError, match="JPEG-LS Lossless") as raised:
    dicom.read_dicom(path)
  assert "Install the matching pixel-data handler" in str(raised.value)


# The Sunnybrook UIDs have components with leading zeros, which pydicom
# reports with a UserWarning.
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_dicom_real_sunnybrook_slice(data_root):
  paths = sorted((data_root / "sunnybrook" / "dicoms").glob("*/*.dcm"))[:1]
  if not paths:
    pytest.skip("Sunnybrook DICOM files not found")
  image = dicom.read_dicom(paths[0])
  assert image.pixels.shape == (256, 256)
  assert image.spacing == pytest.approx((1.367188, 1.367188))
  assert image.slice_position is not None
  assert image.series_uid is not None


# ----------------------------------------------------------------------------
# Suffixes


@pytest.mark.parametrize("name, suffix, stem", [
    ("a.png", ".png", "a"),
    ("dir.v2/scan.NII.GZ", ".nii.gz", "scan"),
    ("case.nii", ".nii", "case"),
    ("x.gz", ".gz", "x"),
    ("a.b.Dcm", ".dcm", "a.b"),
    ("noext", "", "noext"),
])
def test_image_suffix_and_stem(name, suffix, stem):
  assert images.image_suffix(name) == suffix
  assert images.image_stem(name) == stem


def test_png_has_no_spacing(tmp_path):
  from PIL import Image
  Image.fromarray(np.full((2, 2), 7, np.uint8)).save(tmp_path / "a.png")
  image, spacing = images.read_image_with_spacing(tmp_path / "a.png")
  np.testing.assert_array_equal(image, np.full((2, 2), 7.0, np.float32))
  assert spacing is None


def test_index_files_nii_gz_stem(tmp_path):
  from mask_hybridgnet_jax.datasets import common
  (tmp_path / "case1.nii.gz").write_bytes(b"")
  (tmp_path / "case2.PNG").write_bytes(b"")
  (tmp_path / "case3.raw").write_bytes(b"")
  by_stem, skipped = common.index_files(tmp_path, images.IMAGE_SUFFIXES, "image")
  assert sorted(by_stem) == ["case1", "case2"]
  assert by_stem["case1"].name == "case1.nii.gz"
  assert [entry["file"] for entry in skipped] == [str(tmp_path / "case3.raw")]


def test_find_images_nii_gz(tmp_path):
  from mask_hybridgnet_jax import predict
  (tmp_path / "a.nii.gz").write_bytes(b"")
  (tmp_path / "b.gz").write_bytes(b"")
  assert predict.find_images([str(tmp_path)]) == [str(tmp_path / "a.nii.gz")]
