"""Command-line front ends of the analysis tools.

`add_parsers` registers the sub-commands on the `mask-hybridgnet` parser and
`run` executes one. Each command reads files, calls the library functions of
this package and writes its results (JSON, CSV, PNG) into `--output_dir`.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
from typing import Any, Sequence

import numpy as np

from mask_hybridgnet_jax.io.atomic import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

COMMANDS = ("shape-analysis", "atlas", "correspondence", "head-circumference", "reconstruct",
            "track", "mask2graph")


def add_parsers(commands: Any) -> None:
  """Add the analysis sub-commands to an argparse sub-parser collection."""
  shape = commands.add_parser(
      "shape-analysis",
      help="Procrustes alignment, mean shape and principal modes of predicted graphs")
  _add_population_arguments(shape)
  shape.add_argument("--num_modes", type=int, default=5,
                     help="principal modes to keep (default: %(default)s)")
  shape.add_argument("--plot_modes", type=int, default=3,
                     help="modes drawn as mean +- 2 sd (default: %(default)s)")

  atlas = commands.add_parser(
      "atlas", help="Procrustes-aligned mean graph of a population, with its figure")
  _add_population_arguments(atlas)

  correspondence = commands.add_parser(
      "correspondence",
      help="node-to-landmark correspondence error against the arc-length baseline")
  correspondence.add_argument("--predictions", required=True,
                              help="folder of predicted landmark JSONs (predict output)")
  correspondence.add_argument("--landmarks", required=True, nargs="+",
                              help="folder(s) of manual landmark JSONs {organ: [[x, y], ...]}, "
                                   "same stems and pixel frame as the predictions")
  correspondence.add_argument("--npy_layout", nargs="+", metavar="ORGAN:COUNT",
                              help="read flat *.npy landmark files split into organs in this "
                                   "order instead of JSON (JSRT: right_lung:44 left_lung:50 "
                                   "heart:26 right_clavicle:23 left_clavicle:23)")
  correspondence.add_argument("--workdir",
                              help="training workdir: take the train and test ids from its "
                                   "prepared dataset")
  correspondence.add_argument("--train_ids", help="file of training ids, one per line")
  correspondence.add_argument("--test_ids", help="file of test ids, one per line")
  correspondence.add_argument("--test_fraction", type=float, default=None,
                              help="without ids or workdir: fraction of the images, drawn "
                                   "with --split_seed, used as the test split")
  correspondence.add_argument("--split_seed", type=int, default=0)
  correspondence.add_argument("--organs", nargs="+", help="organs to evaluate (default: all "
                                                          "organs shared by both folders)")
  correspondence.add_argument("--output_dir", required=True)

  head = commands.add_parser(
      "head-circumference",
      help="ellipse fit and Ramanujan circumference (mm) of predicted fetal-head graphs")
  head.add_argument("--predictions", required=True,
                    help="folder of predicted landmark JSONs (predict output)")
  head.add_argument("--table", required=True,
                    help="CSV `filename, pixel size(mm)[, head circumference (mm)]` (HC18 layout)")
  head.add_argument("--organ", help="organ holding the head contour (default: the only organ)")
  head.add_argument("--ids", help="file of ids to measure, one per line (default: all "
                                  "predictions)")
  head.add_argument("--workdir", help="training workdir: measure the ids of --split of its "
                                      "prepared dataset")
  head.add_argument("--split", default="test", help="split used with --workdir "
                                                    "(default: %(default)s)")
  head.add_argument("--output_dir", required=True)

  reconstruct = commands.add_parser(
      "reconstruct", help="surface mesh (PLY, OBJ) and volume (mL) from one patient's slices")
  reconstruct.add_argument("--predictions", required=True,
                           help="folder of predicted landmark JSONs, one per slice of one "
                                "patient")
  reconstruct.add_argument("--spacing", type=float, nargs=2,
                           metavar=("ROW_MM", "COL_MM"),
                           help="in-plane pixel spacing in mm (default with --dicom_dir: "
                                "PixelSpacing of its first file)")
  positions = reconstruct.add_mutually_exclusive_group(required=True)
  positions.add_argument("--positions",
                         help="CSV `stem, position_mm` giving each slice's position along "
                              "the stack axis")
  positions.add_argument("--slice_gap", type=float,
                         help="distance between consecutive slices in mm, slices in file-name "
                              "order")
  positions.add_argument("--dicom_dir",
                         help="folder of the slices' DICOM files (<stem>.dcm): positions from "
                              "ImagePositionPatient along the slice normal")
  reconstruct.add_argument("--organs", nargs="+", help="organs to mesh (default: all)")
  reconstruct.add_argument("--output_dir", required=True)

  track = commands.add_parser(
      "track", help="per-node trajectories [T, N, 2] over a sequence of frames")
  track.add_argument("frames", help="folder of images, multi-frame DICOM or NIfTI volume")
  track.add_argument("--workdir", required=True, help="training workdir to load")
  track.add_argument("--checkpoint", choices=("best", "latest"), default="best")
  track.add_argument("--batch_size", type=int, default=8, help="frames per batch")
  track.add_argument("--frame_interval", type=float, default=None,
                     help="seconds between frames, for the time axis of the plot")
  track.add_argument("--output_dir", required=True)

  mask2graph = commands.add_parser(
      "mask2graph", help="turn label masks into graphs with a mask-input model")
  mask2graph.add_argument("inputs", nargs="+", help="label-map files or folders of them")
  mask2graph.add_argument("--workdir", required=True,
                          help="workdir of a model trained with --config.input=masks")
  mask2graph.add_argument("--checkpoint", choices=("best", "latest"), default="best")
  mask2graph.add_argument("--batch_size", type=int, default=8, help="masks per batch")
  mask2graph.add_argument("--num_samples", "--samples", type=int, default=0,
                          help="latent samples for per-node uncertainty (0: none)")
  mask2graph.add_argument("--no_overlay", action="store_true", help="skip the overlay PNGs")
  mask2graph.add_argument("--output_dir", required=True)


def _add_population_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--landmarks", required=True,
                      help="folder of landmark JSONs (predict or mask2graph output)")
  parser.add_argument("--organs", nargs="+",
                      help="organs to analyse jointly, in this order (default: all organs of "
                           "the first file)")
  parser.add_argument("--tolerance", type=float, default=1e-8,
                      help="Procrustes convergence tolerance, in units of centroid size")
  parser.add_argument("--output_dir", required=True)


def run(args: argparse.Namespace) -> int:
  """Run one analysis command; return the exit status."""
  handlers = {
      "shape-analysis": _run_shape_analysis,
      "atlas": _run_atlas,
      "correspondence": _run_correspondence,
      "head-circumference": _run_head_circumference,
      "reconstruct": _run_reconstruct,
      "track": _run_track,
      "mask2graph": _run_mask2graph,
  }
  return handlers[args.command](args)


# ----------------------------------------------------------------------------
# Population shape analysis and atlas.


def _read_population(args) -> tuple[list[str], np.ndarray, list[str], list[slice]]:
  from mask_hybridgnet_jax.analysis.landmarks import concatenate_organs, read_landmark_folder

  records = read_landmark_folder(args.landmarks)
  if len(records) < 2:
    raise ValueError(f"{args.landmarks}: a population needs at least 2 files, found "
                     f"{len(records)}.")
  organs = args.organs or list(next(iter(records.values())))
  shapes, slices = concatenate_organs(records, organs, args.landmarks)
  return list(records), shapes, organs, slices


def _run_shape_analysis(args) -> int:
  from mask_hybridgnet_jax.analysis import plots
  from mask_hybridgnet_jax.analysis.shape import generalized_procrustes, shape_modes

  stems, shapes, organs, slices = _read_population(args)
  result = generalized_procrustes(shapes, tolerance=args.tolerance)
  modes = shape_modes(result.aligned, min(args.num_modes, shapes.shape[0] - 1,
                                          2 * shapes.shape[1]))
  os.makedirs(args.output_dir, exist_ok=True)
  json_path = os.path.join(args.output_dir, "shape_modes.json")
  write_json_atomic(json_path, {
      "ids": stems,
      "organs": {name: [s.start, s.stop] for name, s in zip(organs, slices)},
      "units": "aligned frame, unit centroid size",
      "procrustes_iterations": result.iterations,
      "procrustes_converged": result.converged,
      "mean": modes.mean,
      "std": modes.std,
      "explained_variance_ratio": modes.explained_variance_ratio,
      "modes": modes.modes,
  })
  figure_path = plots.plot_shape_modes(
      modes, slices, os.path.join(args.output_dir, "shape_modes.png"), args.plot_modes)
  print(f"{len(stems)} shapes, {shapes.shape[1]} nodes ({', '.join(organs)}); Procrustes "
        f"{'converged' if result.converged else 'did NOT converge'} in {result.iterations} "
        "iteration(s)")
  cumulative = np.cumsum(modes.explained_variance_ratio)
  for k, (ratio, total) in enumerate(zip(modes.explained_variance_ratio, cumulative)):
    print(f"  mode {k + 1}: {100 * ratio:5.1f}% of variance ({100 * total:5.1f}% cumulative)")
  print(f"written: {json_path}, {figure_path}")
  return 0


def _run_atlas(args) -> int:
  from mask_hybridgnet_jax.analysis import plots
  from mask_hybridgnet_jax.analysis.shape import centroid_size, generalized_procrustes

  stems, shapes, organs, slices = _read_population(args)
  result = generalized_procrustes(shapes, tolerance=args.tolerance)
  # Back to pixels: the population's mean centroid size and mean centroid.
  size = float(np.mean([centroid_size(s) for s in shapes]))
  centre = shapes.mean(axis=(0, 1))
  atlas = result.mean * size + centre
  aligned = result.aligned * size + centre
  os.makedirs(args.output_dir, exist_ok=True)
  json_path = os.path.join(args.output_dir, "atlas.json")
  data: dict[str, Any] = {name: np.round(atlas[s], 3).tolist() for name, s in zip(organs, slices)}
  write_json_atomic(json_path, data)
  meta_path = os.path.join(args.output_dir, "atlas_info.json")
  write_json_atomic(meta_path, {
      "ids": stems, "mean_centroid_size_px": size,
      "procrustes_iterations": result.iterations, "procrustes_converged": result.converged})
  figure_path = plots.plot_atlas(aligned, atlas, slices,
                                 os.path.join(args.output_dir, "atlas.png"))
  print(f"atlas of {len(stems)} graphs ({', '.join(organs)}); Procrustes "
        f"{'converged' if result.converged else 'did NOT converge'} in {result.iterations} "
        "iteration(s)")
  print(f"written: {json_path}, {figure_path}")
  return 0


# ----------------------------------------------------------------------------
# Correspondence.


def split_ids_from_workdir(workdir: str, split: str) -> list[str]:
  """Return the example ids of one split of a workdir's prepared dataset."""
  from mask_hybridgnet_jax.datasets.common import read_split
  from mask_hybridgnet_jax.input_pipeline import example_id
  from mask_hybridgnet_jax.predict import WorkdirError
  from mask_hybridgnet_jax.train.loop import load_config_builder
  from mask_hybridgnet_jax import config_utils

  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise WorkdirError(f"{workdir} is not a training workdir: {config_path} is missing.")
  with open(config_path, encoding="utf-8") as f:
    config = config_utils.config_from_json(f.read())
  source = read_split(load_config_builder(config, workdir), split)
  return [example_id(source[i]) for i in range(len(source))]


def _correspondence_splits(args, available: Sequence[str]) -> tuple[list[str], list[str]]:
  from mask_hybridgnet_jax.analysis.correspondence import split_ids
  from mask_hybridgnet_jax.analysis.landmarks import read_id_list

  if args.workdir:
    return split_ids_from_workdir(args.workdir, "train"), split_ids_from_workdir(
        args.workdir, "test")
  if args.train_ids and args.test_ids:
    return read_id_list(args.train_ids), read_id_list(args.test_ids)
  if args.test_fraction is not None:
    return split_ids(available, args.test_fraction, args.split_seed)
  raise ValueError("choose the split: give --workdir, or --train_ids and --test_ids, or "
                   "--test_fraction.")


def _run_correspondence(args) -> int:
  from mask_hybridgnet_jax.analysis import plots
  from mask_hybridgnet_jax.analysis.correspondence import correspondence_report
  from mask_hybridgnet_jax.analysis.landmarks import (
      parse_layout, read_landmark_folder, read_landmark_folders)

  predictions = read_landmark_folder(args.predictions)
  layout = parse_layout(args.npy_layout) if args.npy_layout else None
  landmarks = read_landmark_folders(args.landmarks, layout)
  available = sorted(set(predictions) & set(landmarks))
  train_ids, test_ids = _correspondence_splits(args, available)
  results = correspondence_report(predictions, landmarks, train_ids, test_ids, args.organs)

  os.makedirs(args.output_dir, exist_ok=True)
  rows = [r.summary() for r in results]
  json_path = os.path.join(args.output_dir, "correspondence.json")
  write_json_atomic(json_path, {
      "unit": "pixels of the landmark files; relative = error / sqrt(landmark polygon area)",
      "train_ids": train_ids, "test_ids": test_ids, "summary": rows,
      "organs": {r.organ: {
          "assignment": r.assignment, "baseline_assignment": r.baseline_assignment,
          "error_per_landmark_px": r.errors.mean(axis=0),
          "baseline_error_per_landmark_px": r.baseline_errors.mean(axis=0),
      } for r in results},
  })
  csv_path = os.path.join(args.output_dir, "correspondence.csv")
  write_text_atomic(csv_path, _rows_to_csv(rows))
  figure_path = plots.plot_correspondence(results, os.path.join(args.output_dir,
                                                                "correspondence.png"))
  print(f"{len(train_ids)} training and {len(test_ids)} test images")
  print(f"{'organ':<16} {'error px':>9} {'relative':>9} {'baseline px':>12} {'relative':>9} "
        f"{'reduction':>10}")
  for row in rows:
    print(f"{row['organ']:<16} {row['error_px']:9.2f} {row['relative_error']:9.4f} "
          f"{row['baseline_error_px']:12.2f} {row['baseline_relative_error']:9.4f} "
          f"{100 * row['reduction_vs_baseline']:9.1f}%")
  print(f"written: {json_path}, {csv_path}, {figure_path}")
  return 0


def _rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
  return buffer.getvalue()


# ----------------------------------------------------------------------------
# Head circumference.


def _run_head_circumference(args) -> int:
  from mask_hybridgnet_jax.analysis import plots
  from mask_hybridgnet_jax.analysis.head_circumference import (
      EllipseFitError, compare_measurements, head_circumference, read_hc18_csv)
  from mask_hybridgnet_jax.analysis.landmarks import read_id_list, read_landmark_folder

  predictions = read_landmark_folder(args.predictions)
  table = read_hc18_csv(args.table)
  if args.ids:
    ids = read_id_list(args.ids)
  elif args.workdir:
    ids = split_ids_from_workdir(args.workdir, args.split)
  else:
    ids = list(predictions)
  rows, failures = [], {}
  for image_id in ids:
    if image_id not in predictions:
      failures[image_id] = "no prediction"
      continue
    if image_id not in table:
      failures[image_id] = f"not in {args.table}"
      continue
    organs = predictions[image_id]
    organ = args.organ or (next(iter(organs)) if len(organs) == 1 else None)
    if organ is None or organ not in organs:
      raise ValueError(f"{image_id}: choose the head organ with --organ; the prediction has "
                       f"{sorted(organs)}.")
    pixel_size, reference = table[image_id]
    try:
      circumference, ellipse = head_circumference(organs[organ], pixel_size)
    except EllipseFitError as e:
      failures[image_id] = str(e)
      continue
    rows.append({
        "id": image_id, "pixel_size_mm": pixel_size, "hc_mm": circumference,
        "reference_hc_mm": reference if reference is not None else float("nan"),
        "difference_mm": circumference - reference if reference is not None else float("nan"),
        "centre_x": ellipse.centre[0], "centre_y": ellipse.centre[1],
        "semi_major_px": ellipse.semi_major, "semi_minor_px": ellipse.semi_minor,
        "angle_rad": ellipse.angle})
  if not rows:
    raise ValueError(f"no head circumference could be measured; failures: {failures}")
  os.makedirs(args.output_dir, exist_ok=True)
  csv_path = os.path.join(args.output_dir, "head_circumference.csv")
  write_text_atomic(csv_path, _rows_to_csv(rows))
  with_reference = [r for r in rows if np.isfinite(r["reference_hc_mm"])]
  summary: dict[str, Any] = {"measured": len(rows), "failures": failures}
  written = [csv_path]
  if with_reference:
    predicted = [r["hc_mm"] for r in with_reference]
    reference = [r["reference_hc_mm"] for r in with_reference]
    summary.update(compare_measurements(predicted, reference))
    written.append(plots.plot_agreement(
        predicted, reference, os.path.join(args.output_dir, "head_circumference.png"),
        title="head circumference"))
  summary_path = os.path.join(args.output_dir, "summary.json")
  write_json_atomic(summary_path, summary)
  written.append(summary_path)
  print(f"measured {len(rows)} of {len(ids)} images")
  if with_reference:
    print(f"mean absolute difference {summary['mean_absolute_difference']:.2f} mm "
          f"(sd {summary['std_absolute_difference']:.2f}), bias {summary['mean_difference']:+.2f}"
          f" mm, Pearson r {summary['pearson_r']:.4f} over {summary['count']} images")
  for image_id, reason in failures.items():
    print(f"  {image_id}: {reason}", file=sys.stderr)
  print(f"written: {', '.join(written)}")
  return 1 if failures else 0


# ----------------------------------------------------------------------------
# Cross-slice reconstruction.


def read_positions_csv(path: str) -> dict[str, float]:
  """Read `stem, position_mm` rows (a header line is allowed) into stem -> mm."""
  positions = {}
  with open(path, encoding="utf-8", newline="") as f:
    for line_number, row in enumerate(csv.reader(f), start=1):
      if not row or not row[0].strip() or row[0].strip().startswith("#"):
        continue
      try:
        value = float(row[1])
      except (IndexError, ValueError):
        if line_number == 1:
          continue  # header
        raise ValueError(f"{path}:{line_number}: expected `stem, position_mm`, got {row}.")
      positions[os.path.splitext(os.path.basename(row[0].strip()))[0]] = value
  return positions


def _run_reconstruct(args) -> int:
  from mask_hybridgnet_jax.analysis import plots
  from mask_hybridgnet_jax.analysis.landmarks import read_landmark_folder
  from mask_hybridgnet_jax.analysis.reconstruction import (
      build_surface, dicom_pixel_spacing, slice_positions_from_dicom, write_obj, write_ply)

  records = read_landmark_folder(args.predictions)
  stems = list(records)
  spacing = tuple(args.spacing) if args.spacing else None
  if args.positions or args.dicom_dir:
    if args.positions:
      table = read_positions_csv(args.positions)
    else:
      dicom_paths = [os.path.join(args.dicom_dir, f"{s}.dcm") for s in stems]
      absent = [p for p in dicom_paths if not os.path.isfile(p)]
      if absent:
        raise FileNotFoundError(f"no DICOM file for slice(s): {absent[:5]}")
      table = slice_positions_from_dicom(dicom_paths)
      if spacing is None:
        spacing = dicom_pixel_spacing(dicom_paths[0])
    missing = [s for s in stems if s not in table]
    if missing:
      raise ValueError(
          f"{args.positions or args.dicom_dir} has no position for slice(s) {missing}.")
    positions = [table[s] for s in stems]
  else:
    if not args.slice_gap > 0:
      raise ValueError(f"--slice_gap must be positive (mm), got {args.slice_gap}.")
    positions = [k * args.slice_gap for k in range(len(stems))]
  if spacing is None:
    raise ValueError("give the in-plane pixel spacing with --spacing ROW_MM COL_MM.")
  organs = args.organs or list(records[stems[0]])
  os.makedirs(args.output_dir, exist_ok=True)
  meshes, volumes, written = {}, {}, []
  for organ in organs:
    present = [s for s in stems if organ in records[s]]
    if len(present) < 2:
      logger.warning("%s: found on %d slice(s); a surface needs 2, skipped", organ, len(present))
      continue
    mesh = build_surface([records[s][organ] for s in present],
                         [positions[stems.index(s)] for s in present],
                         spacing, organ)
    meshes[organ] = mesh
    volumes[organ] = {"volume_ml": mesh.volume_ml(), "slices": len(present)}
    for suffix, writer in ((".ply", write_ply), (".obj", write_obj)):
      path = os.path.join(args.output_dir, f"{organ}{suffix}")
      writer(path, mesh, comment=f"{organ}, vertices in mm")
      written.append(path)
  if not meshes:
    raise ValueError(f"no organ of {organs} appears on 2 or more slices in {args.predictions}.")
  volume_path = os.path.join(args.output_dir, "volumes.json")
  write_json_atomic(volume_path, volumes)
  written.append(volume_path)
  written.append(plots.plot_surfaces(meshes, os.path.join(args.output_dir, "surfaces.png")))
  for organ, info in volumes.items():
    print(f"{organ}: {info['volume_ml']:.2f} mL enclosed, {info['slices']} slices")
  print(f"written: {', '.join(written)}")
  return 0


# ----------------------------------------------------------------------------
# Tracking and mask to graph (need a trained model).


def _run_track(args) -> int:
  from mask_hybridgnet_jax.analysis import plots
  from mask_hybridgnet_jax.analysis.tracking import read_frames, track, write_trajectories
  from mask_hybridgnet_jax.predict import Predictor, load_trained_model

  frames, names = read_frames(args.frames)
  predictor = Predictor(load_trained_model(args.workdir, args.checkpoint),
                        batch_size=args.batch_size)

  def predict(batch):
    return [p.nodes for p in predictor.predict_images(batch)]

  trajectories = track(frames, predict, args.batch_size)
  paths = write_trajectories(trajectories, names, args.output_dir)
  figure_path = plots.plot_displacements(
      trajectories, os.path.join(args.output_dir, "displacement.png"), args.frame_interval)
  print(f"tracked {len(frames)} frames: "
        + ", ".join(f"{organ} {t.shape[1]} nodes" for organ, t in trajectories.items()))
  print(f"written: {paths['json']}, {paths['csv']}, {figure_path}")
  return 0


def _run_mask2graph(args) -> int:
  from mask_hybridgnet_jax.predict import (
      Predictor, find_images, load_trained_model, mask_files_to_graphs)

  trained = load_trained_model(args.workdir, args.checkpoint)
  paths = find_images(args.inputs)
  if not paths:
    raise FileNotFoundError(f"no label maps found in {' '.join(args.inputs)}")
  predictor = Predictor(trained, batch_size=args.batch_size, num_samples=args.num_samples)
  report = mask_files_to_graphs(predictor, paths, args.output_dir, overlay=not args.no_overlay)
  if report.fidelity:
    csv_path = os.path.join(args.output_dir, "fidelity.csv")
    write_text_atomic(csv_path, _rows_to_csv(report.fidelity))
    print(f"Dice of each graph against its own input mask ({csv_path}):")
    for organ in dict.fromkeys(row["organ"] for row in report.fidelity):
      values = [r["dice"] for r in report.fidelity if r["organ"] == organ]
      finite = [v for v in values if np.isfinite(v)]
      if finite:
        print(f"  {organ}: mean {np.mean(finite):.4f}, min {np.min(finite):.4f} over "
              f"{len(finite)} masks ({len(values) - len(finite)} without the organ)")
  print(f"converted {len(report.outputs)} of {len(paths)} masks into "
        f"{os.path.abspath(args.output_dir)}")
  if report.failures:
    print(f"{len(report.failures)} mask(s) failed:", file=sys.stderr)
    for path, reason in report.failures.items():
      print(f"  {path}: {reason}", file=sys.stderr)
    return 1
  return 0
