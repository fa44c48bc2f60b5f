"""Per-organ Dice, Hausdorff and ASSD of predicted graphs, at the original image size.

Two sources of ground truth: a prepared dataset split (the masks stored at
original resolution with each example), or a folder of predicted label maps
next to a folder of ground-truth label maps. Distances are in mm when the
example has a pixel spacing, else in pixels, as the `unit` column records.
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Sequence

import numpy as np

from mask_hybridgnet_jax.contours import organ_masks
from mask_hybridgnet_jax.io.atomic import write_text_atomic
from mask_hybridgnet_jax.io.images import IMAGE_SUFFIXES, image_stem, image_suffix, read_label_map
from mask_hybridgnet_jax.metrics import EMPTY_MASK_POLICY, evaluate_organs, summarize
from mask_hybridgnet_jax.organs import DatasetMetadata
from mask_hybridgnet_jax.predict import Predictor, prediction_masks
from mask_hybridgnet_jax.preprocess import SquareTransform

CSV_COLUMNS = ("id", "organ", "dice", "hausdorff", "assd", "unit")


def evaluate_source(predictor: Predictor, source: Any, progress: bool = True) -> list[dict]:
  """Evaluate a predictor on every example of a prepared-dataset data source."""
  import tqdm

  trained = predictor.trained
  names = trained.template.organ_names
  rows = []
  indices = range(len(source))
  for start in tqdm.tqdm(range(0, len(source), predictor.batch_size), disable=not progress,
                         desc="evaluate", unit="batch"):
    examples = [source[i] for i in indices[start:start + predictor.batch_size]]
    if trained.input_kind == "masks":
      # [O, S, S] -> [S, S, O]: a mask-input model reads the organ masks.
      inputs = np.stack([np.moveaxis(np.asarray(e["masks"]) > 0, 0, -1) for e in examples])
    else:
      inputs = np.stack([np.asarray(e["image"], np.float32) for e in examples])
    positions, spreads = predictor.predict_network_images(inputs.astype(np.float32))
    for example, position, spread in zip(examples, positions, spreads):
      height, width = (int(v) for v in example["original_size"])
      transform = SquareTransform(height, width, trained.image_size)
      prediction = predictor.to_prediction(position, spread, transform)
      predicted = prediction_masks(prediction, names)
      truth = np.asarray(example["masks_original"]) > 0
      spacing = tuple(float(v) for v in example["spacing"]) if bool(example["has_spacing"]) else None
      example_id = _text(example["id"])
      for row in evaluate_organs(predicted, truth, names, spacing):
        rows.append({"id": example_id, **row})
  return rows


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def evaluate_folders(prediction_dir: str, mask_dir: str, metadata: DatasetMetadata,
                     spacing: tuple[float, float] | None = None) -> tuple[list[dict], list[str]]:
  """Compare `<stem>_mask.png` (or `<stem>.png`) predictions with ground-truth label maps.

  Returns the rows and the ground-truth stems that had no prediction.
  """
  rows, missing = [], []
  names = metadata.organ_names
  for name in sorted(os.listdir(mask_dir)):
    stem = image_stem(name)
    if image_suffix(name) not in IMAGE_SUFFIXES:
      continue
    candidates = [os.path.join(prediction_dir, f"{stem}_mask.png"),
                  os.path.join(prediction_dir, f"{stem}.png")]
    prediction_path = next((p for p in candidates if os.path.exists(p)), None)
    if prediction_path is None:
      missing.append(stem)
      continue
    truth_path = os.path.join(mask_dir, name)
    truth = organ_masks(read_label_map(truth_path), metadata.organs, source=truth_path)
    predicted = organ_masks(read_label_map(prediction_path), metadata.organs,
                            source=prediction_path)
    if predicted.shape != truth.shape:
      raise ValueError(
          f"{prediction_path}: size {predicted.shape[1:]} differs from the ground truth "
          f"{truth_path} {truth.shape[1:]}; predictions must be at the original image size")
    for row in evaluate_organs(predicted, truth, names, spacing):
      rows.append({"id": stem, **row})
  return rows, missing


def rows_to_csv(rows: Sequence[dict]) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore",
                          lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                     for k, v in row.items()})
  return buffer.getvalue()


def write_results(rows: Sequence[dict], output_dir: str) -> dict[str, str]:
  """Write `metrics.csv` (one row per image and organ), `summary.md` and `dice_boxplot.png`.

  Returns:
    Paths keyed "csv", "summary" and "dice_plot". There is no plot, and no
    "dice_plot" key, when `rows` is empty.
  """
  from mask_hybridgnet_jax import visualize  # matplotlib is only needed here

  os.makedirs(output_dir, exist_ok=True)
  csv_path = os.path.join(output_dir, "metrics.csv")
  write_text_atomic(csv_path, rows_to_csv(rows))
  summary_path = os.path.join(output_dir, "summary.md")
  write_text_atomic(summary_path, format_summary(rows) + "\n\n" + EMPTY_MASK_POLICY + "\n")
  paths = {"csv": csv_path, "summary": summary_path}
  if rows:
    paths["dice_plot"] = visualize.plot_dice_boxplot(
        list(rows), os.path.join(output_dir, "dice_boxplot.png"))
  return paths


def format_summary(rows: Sequence[dict]) -> str:
  """Format a markdown table of per-organ mean +- std of Dice, Hausdorff and ASSD."""
  if not rows:
    return "no examples evaluated"
  summary = summarize(rows)
  units = sorted({row["unit"] for row in rows})
  unit = units[0] if len(units) == 1 else "/".join(units)
  lines = [
      f"| organ | images | Dice | Hausdorff ({unit}) | ASSD ({unit}) | distances missing |",
      "|---|---|---|---|---|---|",
  ]
  for organ, stats in summary.items():
    lines.append(
        f"| {organ} | {stats['count']} | {stats['dice_mean']:.4f} +- {stats['dice_std']:.4f} "
        f"| {stats['hausdorff_mean']:.2f} +- {stats['hausdorff_std']:.2f} "
        f"| {stats['assd_mean']:.2f} +- {stats['assd_std']:.2f} | {stats['missing_distances']} |")
  return "\n".join(lines)


def evaluate_workdir(workdir: str, split: str = "test", checkpoint: str = "best",
                     batch_size: int = 8, output_dir: str | None = None,
                     progress: bool = True) -> dict[str, str]:
  """Evaluate a training workdir's checkpoint on a split of its dataset.

  Writes `metrics.csv` and `summary.md` into `output_dir`, by default
  `<workdir>/eval_<split>`, and returns their paths.
  """
  from mask_hybridgnet_jax.datasets.common import read_split
  from mask_hybridgnet_jax.predict import load_trained_model
  from mask_hybridgnet_jax.train.loop import load_config_builder

  trained = load_trained_model(workdir, checkpoint)
  source = read_split(load_config_builder(trained.config, workdir), split)
  rows = evaluate_source(Predictor(trained, batch_size=batch_size), source, progress=progress)
  return write_results(rows, output_dir or os.path.join(workdir, f"eval_{split}"))
