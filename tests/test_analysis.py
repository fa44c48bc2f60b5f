"""Analysis tools on hand-made shapes with closed-form expected values."""

import csv
import json
import math
import os

import numpy as np
import pytest
from PIL import Image
from scipy.special import ellipe

from mask_hybridgnet_jax import cli
from mask_hybridgnet_jax.analysis import correspondence as corr
from mask_hybridgnet_jax.analysis import head_circumference as hc
from mask_hybridgnet_jax.analysis import reconstruction as recon
from mask_hybridgnet_jax.analysis import shape as shape_lib
from mask_hybridgnet_jax.analysis import tracking
from mask_hybridgnet_jax.analysis.landmarks import read_landmarks


def _rotation(angle):
  # Row-vector convention: points @ R turns by `angle`.
  c, s = math.cos(angle), math.sin(angle)
  return np.array([[c, s], [-s, c]])


def _circle(radius, count, centre=(0.0, 0.0), start=-math.pi / 2):
  # Starts at the topmost point (smallest y) and runs with positive shoelace area.
  t = start + 2 * math.pi * np.arange(count) / count
  return np.stack([centre[0] + radius * np.cos(t), centre[1] + radius * np.sin(t)], axis=1)


def _blob(seed, count=20):
  rng = np.random.default_rng(seed)
  radius = 10 + rng.uniform(-2, 2, count)
  t = 2 * math.pi * np.arange(count) / count
  return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


# ----------------------------------------------------------------------------
# Procrustes and shape modes.


def test_procrustes_similarity_copy_zero_residual():
  shape = _blob(0)
  copy = 2.5 * shape @ _rotation(0.7) + np.array([30.0, -12.0])
  aligned, transform, rms = shape_lib.procrustes_align(copy, shape)
  assert rms < 1e-10
  assert np.max(np.abs(aligned - shape)) < 1e-10
  assert transform.scale == pytest.approx(1 / 2.5, rel=1e-12)


def test_procrustes_recovers_rotation():
  shape = _blob(1)
  _, transform, _ = shape_lib.procrustes_align(shape @ _rotation(0.7), shape)
  np.testing.assert_allclose(transform.rotation, _rotation(-0.7), atol=1e-12)


def test_procrustes_never_reflects():
  shape = _blob(2)
  mirrored = shape * np.array([-1.0, 1.0])
  _, transform, rms = shape_lib.procrustes_align(mirrored, shape)
  assert np.linalg.det(transform.rotation) == pytest.approx(1.0)
  assert rms > 0.1


def test_procrustes_rejects_collapsed_shape():
  with pytest.raises(ValueError, match="all equal"):
    shape_lib.procrustes_align(np.ones((5, 2)), _blob(0, 5))


def test_generalized_procrustes_similarity_copies():
  base = _blob(3)
  shapes = np.stack([s * base @ _rotation(a) + t for s, a, t in [
      (1.0, 0.0, (0, 0)), (3.0, 1.0, (5, 7)), (0.5, -2.0, (-9, 1)), (2.0, 2.5, (100, 50))]])
  result = shape_lib.generalized_procrustes(shapes)
  assert result.converged
  assert np.max(np.abs(result.aligned - result.mean)) < 1e-9
  assert shape_lib.centroid_size(result.mean) == pytest.approx(1.0)
  assert np.max(np.abs(result.mean.mean(axis=0))) < 1e-12


def test_shape_modes_single_direction():
  rng = np.random.default_rng(4)
  base = _blob(4)
  direction = rng.normal(size=base.shape)
  direction /= np.linalg.norm(direction)
  amounts = np.array([-2.0, -0.5, 0.0, 1.0, 1.5])
  shapes = base + amounts[:, None, None] * direction
  modes = shape_lib.shape_modes(shapes, num_modes=2)
  assert modes.explained_variance_ratio[0] == pytest.approx(1.0)
  assert modes.std[0] == pytest.approx(np.std(amounts, ddof=1))
  assert abs(np.sum(modes.modes[0] * direction)) == pytest.approx(1.0)
  np.testing.assert_allclose(modes.mean, shapes.mean(axis=0), atol=1e-12)


def test_shape_modes_rejects_too_many_modes():
  with pytest.raises(ValueError, match="num_modes"):
    shape_lib.shape_modes(np.stack([_blob(0), _blob(1)]), num_modes=2)


# ----------------------------------------------------------------------------
# Correspondence.


def test_identical_graphs_zero_error():
  rng = np.random.default_rng(5)
  shapes = np.stack([_blob(k) + rng.uniform(0, 50, 2) for k in range(6)])
  result = corr.organ_correspondence("lung", shapes[:4], shapes[:4], shapes[4:], shapes[4:])
  np.testing.assert_array_equal(result.assignment, np.arange(20))
  assert result.mean_error == 0.0
  assert result.mean_relative_error == 0.0


def test_arc_length_baseline_exact_on_uniform_landmarks():
  # Landmarks are evenly spaced by arc length from the topmost point. The
  # model's node order is rotated by a different amount in every image, so
  # node i means nothing while the baseline is exact.
  count = 16
  landmarks, nodes = [], []
  for k in range(8):
    ring = _circle(20 + 3 * k, count, centre=(50 + k, 60 - 2 * k))
    landmarks.append(ring)
    nodes.append(np.roll(ring, 3 * k, axis=0)[::-1])
  landmarks, nodes = np.stack(landmarks), np.stack(nodes)
  result = corr.organ_correspondence("organ", nodes[:5], landmarks[:5], nodes[5:], landmarks[5:])
  assert result.baseline_mean_error < 1e-9
  assert result.mean_error > 5.0


def test_assign_landmarks_brute_force():
  rng = np.random.default_rng(6)
  nodes = rng.uniform(0, 10, (3, 7, 2))
  landmarks = rng.uniform(0, 10, (3, 4, 2))
  expected = []
  for j in range(4):
    means = [np.mean([np.linalg.norm(nodes[p, i] - landmarks[p, j]) for p in range(3)])
             for i in range(7)]
    expected.append(int(np.argmin(means)))
  np.testing.assert_array_equal(corr.assign_landmarks(nodes, landmarks), expected)


def test_errors_and_relative_errors_by_hand():
  square = np.array([[[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]]])
  moved = square + np.array([3.0, 4.0])  # every node 5 px away
  errors = corr.assigned_errors(moved, square, np.arange(4))
  np.testing.assert_allclose(errors, 5.0)
  assert corr.organ_size(square)[0] == pytest.approx(4.0)


def test_resample_square_from_top_left():
  square = np.array([[4.0, 4.0], [0.0, 4.0], [0.0, 0.0], [4.0, 0.0]])
  expected = [[0, 0], [2, 0], [4, 0], [4, 2], [4, 4], [2, 4], [0, 4], [0, 2]]
  np.testing.assert_allclose(corr.resample_by_arc_length(square, 8), expected, atol=1e-12)


def test_resample_ignores_input_orientation():
  ring = _blob(7)
  forward = corr.resample_by_arc_length(ring, 12)
  backward = corr.resample_by_arc_length(ring[::-1], 12)
  np.testing.assert_allclose(forward, backward, atol=1e-12)


def test_report_rejects_overlapping_splits():
  records = {name: {"lung": _blob(0)} for name in ("a", "b")}
  with pytest.raises(ValueError, match="overlap"):
    corr.correspondence_report(records, records, ["a", "b"], ["b"])


def test_report_names_missing_prediction():
  records = {"a": {"lung": _blob(0)}, "b": {"lung": _blob(1)}}
  with pytest.raises(ValueError, match="'c'"):
    corr.correspondence_report(records, records, ["a", "b"], ["c"])


def test_split_ids_disjoint_and_seeded():
  ids = [f"id{k}" for k in range(10)]
  train, test = corr.split_ids(ids, 0.2, seed=3)
  assert len(test) == 2
  assert set(train) | set(test) == set(ids)
  assert not set(train) & set(test)
  assert corr.split_ids(ids, 0.2, seed=3) == (train, test)


# ----------------------------------------------------------------------------
# Head circumference.


def test_circle_circumference():
  radius, pixel_size = 37.0, 0.15
  circumference, ellipse = hc.head_circumference(_circle(radius, 64, (200, 150)), pixel_size)
  assert circumference == pytest.approx(2 * math.pi * radius * pixel_size, rel=1e-9)
  assert ellipse.centre[0] == pytest.approx(200.0)
  assert ellipse.centre[1] == pytest.approx(150.0)


def test_ellipse_fit_recovers_parameters():
  truth = hc.Ellipse((120.0, 80.0), 50.0, 30.0, 0.5)
  fitted = hc.fit_ellipse(truth.points(40))
  assert fitted.centre == pytest.approx(truth.centre, abs=1e-8)
  assert fitted.semi_major == pytest.approx(50.0, rel=1e-9)
  assert fitted.semi_minor == pytest.approx(30.0, rel=1e-9)
  assert fitted.angle == pytest.approx(0.5, abs=1e-9)


def test_ramanujan_matches_elliptic_integral():
  a, b = 50.0, 30.0
  exact = 4 * a * ellipe(1 - (b / a) ** 2)
  assert hc.ramanujan_perimeter(a, b) == pytest.approx(exact, rel=1e-6)


def test_ellipse_fit_rejects_collinear_points():
  line = np.stack([np.arange(10.0), 2 * np.arange(10.0)], axis=1)
  with pytest.raises(hc.EllipseFitError):
    hc.fit_ellipse(line)


def test_compare_measurements_by_hand():
  stats = hc.compare_measurements([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
  assert stats["mean_absolute_difference"] == pytest.approx(1 / 3)
  assert stats["mean_difference"] == pytest.approx(-1 / 3)
  # dx = (-1, 0, 1), dy = (-4/3, -1/3, 5/3): r = 3 / sqrt(2 * 42 / 9).
  assert stats["pearson_r"] == pytest.approx(3 / math.sqrt(2 * 42 / 9))


def test_read_hc18_csv(tmp_path):
  path = tmp_path / "table.csv"
  path.write_text("filename,pixel size(mm),head circumference (mm)\n"
                  "000_HC.png,0.069,44.3\n001_HC.png,0.089,\n")
  table = hc.read_hc18_csv(str(path))
  assert table == {"000_HC": (0.069, 44.3), "001_HC": (0.089, None)}


# ----------------------------------------------------------------------------
# Cross-slice reconstruction.


def _prism_volume(radius, count, height):
  return count / 2 * radius ** 2 * math.sin(2 * math.pi / count) * height


def test_cylinder_volume():
  radius, count, gap, slices = 10.0, 48, 8.0, 5
  mesh = recon.build_surface([_circle(radius, count, (30, 30))] * slices,
                             gap * np.arange(slices), (1.0, 1.0))
  height = gap * (slices - 1)
  assert mesh.volume_mm3() == pytest.approx(_prism_volume(radius, count, height), rel=1e-12)
  # The polygon's area deficit is the only difference from pi r^2 h.
  deficit = 1 - count / (2 * math.pi) * math.sin(2 * math.pi / count)
  cylinder = math.pi * radius ** 2 * height
  assert (cylinder - mesh.volume_mm3()) / cylinder == pytest.approx(deficit, rel=1e-9)


def test_frustum_volume():
  count, height = 32, 12.0
  bottom, top = _circle(10.0, count), _circle(4.0, count)
  mesh = recon.build_surface([top, bottom], [height, 0.0], (1.0, 1.0))
  area_bottom = _prism_volume(10.0, count, 1.0)
  area_top = _prism_volume(4.0, count, 1.0)
  expected = height / 3 * (area_bottom + area_top + math.sqrt(area_bottom * area_top))
  assert mesh.volume_mm3() == pytest.approx(expected, rel=1e-12)


def test_mesh_closed_and_consistent():
  mesh = recon.build_surface([_blob(k) for k in range(3)], [0.0, 5.0, 10.0], (1.0, 1.0))
  edges = [(int(f[k]), int(f[(k + 1) % 3])) for f in mesh.faces for k in range(3)]
  # Closed and consistently oriented: every directed edge once, its reverse once.
  assert len(set(edges)) == len(edges)
  assert all((b, a) in set(edges) for a, b in edges)


def test_volume_scales_with_spacing_and_ignores_orientation():
  ring = _circle(10.0, 24)
  base = recon.build_surface([ring, ring], [0.0, 10.0], (1.0, 1.0)).volume_mm3()
  scaled = recon.build_surface([ring[::-1], ring[::-1]], [0.0, 10.0], (0.5, 2.0)).volume_mm3()
  assert scaled == pytest.approx(base, rel=1e-12)
  anisotropic = recon.build_surface([ring, ring], [0.0, 10.0], (1.0, 3.0)).volume_ml()
  assert anisotropic == pytest.approx(3 * base / 1000, rel=1e-12)


def test_repeated_slice_positions_rejected():
  ring = _circle(5.0, 8)
  with pytest.raises(ValueError, match="repeat"):
    recon.build_surface([ring, ring], [1.0, 1.0], (1.0, 1.0))


def test_ply_and_obj_round_trip(tmp_path):
  mesh = recon.build_surface([_circle(5.0, 8)] * 2, [0.0, 1.0], (1.0, 1.0))
  recon.write_ply(str(tmp_path / "m.ply"), mesh)
  recon.write_obj(str(tmp_path / "m.obj"), mesh)
  ply = (tmp_path / "m.ply").read_text().splitlines()
  assert f"element vertex {len(mesh.vertices)}" in ply
  assert f"element face {len(mesh.faces)}" in ply
  obj = (tmp_path / "m.obj").read_text().splitlines()
  faces = np.array([[int(v) - 1 for v in line.split()[1:]] for line in obj if line[0] == "f"])
  np.testing.assert_array_equal(faces, mesh.faces)


# ----------------------------------------------------------------------------
# Tracking.


def _disk_frames(shift, count, size=64, radius=8):
  rows, cols = np.mgrid[:size, :size]
  frames = []
  for t in range(count):
    cx, cy = 20 + shift[0] * t, 24 + shift[1] * t
    frames.append(((cols - cx) ** 2 + (rows - cy) ** 2 <= radius ** 2).astype(np.float32))
  return frames


def _centroid_predictor(frames):
  # A stand-in model: a 12-node circle around the bright pixels' centroid.
  results = []
  for frame in frames:
    rows, cols = np.nonzero(frame > 0.5)
    results.append({"disk": _circle(8.0, 12, (cols.mean(), rows.mean()))})
  return results


def test_track_shifted_sequence():
  shift = (3, -2)
  trajectories = tracking.track(_disk_frames(shift, 5), _centroid_predictor, batch_size=2)
  trajectory = trajectories["disk"]
  assert trajectory.shape == (5, 12, 2)
  expected = trajectory[0] + np.arange(5)[:, None, None] * np.array(shift, float)
  np.testing.assert_allclose(trajectory, expected, atol=1e-9)
  np.testing.assert_allclose(tracking.displacements(trajectory)[4], 4 * math.hypot(*shift))


def test_read_frames_folder_sorted(tmp_path):
  for t, frame in enumerate(_disk_frames((1, 0), 3)):
    Image.fromarray((frame * 255).astype(np.uint8)).save(tmp_path / f"frame_{t:02d}.png")
  frames, names = tracking.read_frames(str(tmp_path))
  assert names == ["frame_00", "frame_01", "frame_02"]
  np.testing.assert_array_equal(frames[2] > 0, _disk_frames((1, 0), 3)[2] > 0)


def test_read_frames_rejects_broken_link(tmp_path):
  for t, frame in enumerate(_disk_frames((1, 0), 2)):
    Image.fromarray((frame * 255).astype(np.uint8)).save(tmp_path / f"frame_{t:02d}.png")
  os.symlink(tmp_path / "missing.png", tmp_path / "frame_02.png")
  with pytest.raises(FileNotFoundError, match="frame_02.png"):
    tracking.read_frames(str(tmp_path))


def test_read_frames_rejects_unknown_file(tmp_path):
  path = tmp_path / "frames.mp4"
  path.write_bytes(b"not frames")
  with pytest.raises(ValueError, match="unsupported"):
    tracking.read_frames(str(path))


def test_write_trajectories_csv_rows(tmp_path):
  trajectories = tracking.track(_disk_frames((1, 1), 3), _centroid_predictor)
  paths = tracking.write_trajectories(trajectories, ["a", "b", "c"], str(tmp_path))
  with open(paths["csv"]) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 3 * 12
  last = [r for r in rows if r["frame"] == "2" and r["node"] == "5"][0]
  assert float(last["displacement"]) == pytest.approx(2 * math.sqrt(2), abs=1e-3)
  with open(paths["json"]) as f:
    assert np.asarray(json.load(f)["disk"]).shape == (3, 12, 2)


# ----------------------------------------------------------------------------
# Command line on hand-made files.


def _write_landmarks(folder, records):
  os.makedirs(folder, exist_ok=True)
  for stem, organs in records.items():
    with open(os.path.join(folder, f"{stem}.json"), "w") as f:
      json.dump({name: np.asarray(points).tolist() for name, points in organs.items()}, f)


def test_cli_correspondence(tmp_path):
  records = {f"img{k}": {"lung": _circle(20 + k, 16, (40 + k, 40))} for k in range(6)}
  _write_landmarks(tmp_path / "pred", records)
  _write_landmarks(tmp_path / "manual", records)
  out = tmp_path / "out"
  status = cli.main(["correspondence", "--predictions", str(tmp_path / "pred"),
                     "--landmarks", str(tmp_path / "manual"), "--test_fraction", "0.5",
                     "--output_dir", str(out)])
  assert status == 0
  with open(out / "correspondence.json") as f:
    summary = json.load(f)["summary"][0]
  assert summary["error_px"] == 0.0
  assert (out / "correspondence.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_head_circumference(tmp_path):
  records = {"000_HC": {"head": _circle(100.0, 32, (300, 200))},
             "001_HC": {"head": _circle(80.0, 32, (300, 200))}}
  _write_landmarks(tmp_path / "pred", records)
  table = tmp_path / "table.csv"
  table.write_text("filename,pixel size(mm),head circumference (mm)\n"
                   "000_HC.png,0.1,60.0\n001_HC.png,0.2,100.0\n")
  out = tmp_path / "out"
  status = cli.main(["head-circumference", "--predictions", str(tmp_path / "pred"),
                     "--table", str(table), "--output_dir", str(out)])
  assert status == 0
  with open(out / "head_circumference.csv") as f:
    rows = {r["id"]: float(r["hc_mm"]) for r in csv.DictReader(f)}
  assert rows["000_HC"] == pytest.approx(2 * math.pi * 100 * 0.1, rel=1e-5)
  assert rows["001_HC"] == pytest.approx(2 * math.pi * 80 * 0.2, rel=1e-5)


def test_cli_reconstruct_cylinder(tmp_path):
  records = {f"slice{k}": {"lv": _circle(10.0, 32, (50, 50))} for k in range(4)}
  _write_landmarks(tmp_path / "pred", records)
  out = tmp_path / "out"
  status = cli.main(["reconstruct", "--predictions", str(tmp_path / "pred"),
                     "--spacing", "1.5", "1.5", "--slice_gap", "10", "--output_dir", str(out)])
  assert status == 0
  with open(out / "volumes.json") as f:
    volume = json.load(f)["lv"]["volume_ml"]
  # Nodes are rounded to 3 decimals in the files; 1e-3 px moves the area by ~1e-4.
  assert volume == pytest.approx(_prism_volume(15.0, 32, 30.0) / 1000, rel=1e-3)
  assert os.path.exists(out / "lv.ply")
  assert os.path.exists(out / "lv.obj")


def test_cli_shape_analysis_and_atlas(tmp_path):
  base = _blob(8)
  records = {f"s{k}": {"a": base[:10] * (1 + 0.1 * k), "b": base[10:] * (1 + 0.1 * k)}
             for k in range(4)}
  _write_landmarks(tmp_path / "pred", records)
  out = tmp_path / "out"
  assert cli.main(["shape-analysis", "--landmarks", str(tmp_path / "pred"),
                   "--output_dir", str(out)]) == 0
  with open(out / "shape_modes.json") as f:
    result = json.load(f)
  assert result["procrustes_converged"]
  assert (out / "shape_modes.png").exists()
  assert cli.main(["atlas", "--landmarks", str(tmp_path / "pred"),
                   "--output_dir", str(out)]) == 0
  atlas = read_landmarks(str(out / "atlas.json"))
  assert atlas["a"].shape == (10, 2)
  assert atlas["b"].shape == (10, 2)


def test_npy_landmarks_split_by_layout(tmp_path):
  from mask_hybridgnet_jax.analysis.landmarks import parse_layout, read_landmark_folders

  values = np.arange(2 * 7, dtype=np.float64)
  os.makedirs(tmp_path / "a")
  np.save(tmp_path / "a" / "x1.npy", values)
  records = read_landmark_folders([str(tmp_path / "a")], parse_layout(["lung:3", "heart:4"]))
  np.testing.assert_array_equal(records["x1"]["lung"], values[:6].reshape(3, 2))
  np.testing.assert_array_equal(records["x1"]["heart"], values[6:].reshape(4, 2))


def test_npy_layout_count_mismatch(tmp_path):
  from mask_hybridgnet_jax.analysis.landmarks import LandmarkFileError, read_npy_landmarks

  np.save(tmp_path / "x.npy", np.zeros(10))
  with pytest.raises(LandmarkFileError, match="needs 8"):
    read_npy_landmarks(str(tmp_path / "x.npy"), [("lung", 4)])


def _write_dicom(path, position, orientation=(1, 0, 0, 0, 1, 0), spacing=(1.5, 1.5)):
  import pydicom
  from pydicom.dataset import FileDataset, FileMetaDataset
  from pydicom.uid import ImplicitVRLittleEndian, generate_uid

  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
  meta.MediaStorageSOPInstanceUID = generate_uid()
  meta.TransferSyntaxUID = ImplicitVRLittleEndian
  dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
  dataset.ImagePositionPatient = [float(v) for v in position]
  dataset.ImageOrientationPatient = [float(v) for v in orientation]
  dataset.PixelSpacing = [float(v) for v in spacing]
  dataset.save_as(str(path), enforce_file_format=True)
  assert pydicom.dcmread(str(path)).PixelSpacing == list(spacing)


def test_slice_positions_from_dicom(tmp_path):
  # Orientation rows along x, columns along z: the normal is -y.
  orientation = (1, 0, 0, 0, 0, 1)
  for k, y in enumerate([10.0, 2.0, -6.0]):
    _write_dicom(tmp_path / f"{k}.dcm", (5.0, y, 7.0), orientation)
  positions = recon.slice_positions_from_dicom([str(tmp_path / f"{k}.dcm") for k in range(3)])
  assert positions == {"0": -10.0, "1": -2.0, "2": 6.0}


def test_dicom_positions_reject_tilted_slice(tmp_path):
  _write_dicom(tmp_path / "a.dcm", (0, 0, 0))
  _write_dicom(tmp_path / "b.dcm", (0, 0, 5), orientation=(1, 0, 0, 0, 0, 1))
  with pytest.raises(ValueError, match="parallel"):
    recon.slice_positions_from_dicom([str(tmp_path / "a.dcm"), str(tmp_path / "b.dcm")])


def test_cli_reconstruct_from_dicom(tmp_path):
  records = {str(k): {"lv": _circle(10.0, 32, (50, 50))} for k in range(3)}
  _write_landmarks(tmp_path / "pred", records)
  for k in range(3):
    _write_dicom(tmp_path / f"{k}.dcm", (0.0, 0.0, 8.0 * k), spacing=(2.0, 2.0))
  out = tmp_path / "out"
  assert cli.main(["reconstruct", "--predictions", str(tmp_path / "pred"),
                   "--dicom_dir", str(tmp_path), "--output_dir", str(out)]) == 0
  with open(out / "volumes.json") as f:
    volume = json.load(f)["lv"]["volume_ml"]
  assert volume == pytest.approx(_prism_volume(20.0, 32, 16.0) / 1000, rel=1e-3)


def test_read_frames_nifti_slices(tmp_path):
  import nibabel as nib

  frames = np.stack(_disk_frames((2, 1), 4, size=32))  # [T, H, W]
  path = tmp_path / "cine.nii.gz"
  nib.save(nib.Nifti1Image(np.transpose(frames, (2, 1, 0)), np.eye(4)), str(path))
  read, names = tracking.read_frames(str(path))
  assert names == ["cine_0", "cine_1", "cine_2", "cine_3"]
  np.testing.assert_array_equal(np.stack(read), frames)
