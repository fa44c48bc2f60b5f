"""Overlays and plots a person can look at."""

from __future__ import annotations

import json
import os
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from mask_hybridgnet_jax.io.atomic import write_bytes_atomic  # noqa: E402
from mask_hybridgnet_jax.preprocess import normalize_intensity  # noqa: E402

# Organ outline colours, cycled in organ order.
_OUTLINE_COLOURS = ((255, 255, 255), (255, 215, 0), (0, 255, 255), (255, 105, 180), (124, 252, 0))


def node_colours(num_nodes: int) -> np.ndarray:
  """`[N, 3]` uint8 colours from a cyclic colour map: node i gets the same hue in every image."""
  cmap = matplotlib.colormaps["hsv"]
  return (np.asarray(cmap(np.arange(num_nodes) / max(num_nodes, 1)))[:, :3] * 255).astype(np.uint8)


def draw_overlay(image: np.ndarray, nodes: Mapping[str, np.ndarray],
                 std: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
  """Draw contours and index-coloured nodes on an image.

  Args:
    image: `[H, W]` intensities in any range (min-max normalised for display).
    nodes: organ name -> `[N, 2]` (x, y) in the image's pixels.
    std: optional organ name -> `[N]` node spreads in pixels, drawn as circles.

  Returns:
    `[H, W, 3]` uint8 RGB.
  """
  gray = (normalize_intensity(image) * 255).astype(np.uint8)
  canvas = Image.fromarray(np.stack([gray] * 3, axis=-1))
  draw = ImageDraw.Draw(canvas)
  height, width = gray.shape
  radius = max(1.5, min(height, width) / 200)
  for index, (name, points) in enumerate(nodes.items()):
    points = np.asarray(points, np.float64)
    if len(points) == 0:
      continue
    outline = _OUTLINE_COLOURS[index % len(_OUTLINE_COLOURS)]
    closed = [tuple(p) for p in points] + [tuple(points[0])]
    draw.line(closed, fill=outline, width=max(1, int(radius / 2)))
    if std is not None and name in std:
      for (x, y), s in zip(points, np.asarray(std[name])):
        if s > 0:
          draw.ellipse([x - s, y - s, x + s, y + s], outline=(255, 64, 64))
    for (x, y), colour in zip(points, node_colours(len(points))):
      draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=tuple(int(c) for c in colour))
  return np.asarray(canvas)


def read_metrics(path: str) -> list[dict]:
  """Records of a metrics.jsonl file; lines cut short by a kill are skipped."""
  records = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def plot_training_curves(metrics_path: str, output_path: str) -> str:
  """Plot training loss and validation metrics from metrics.jsonl into a PNG."""
  records = read_metrics(metrics_path)
  train = [(r["step"], r["loss"]) for r in records if "loss" in r]
  val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
  dice_keys = sorted({k for r in records for k in r if k.startswith("val_dice/")})
  figure, axes = plt.subplots(1, 2, figsize=(10, 4))
  if train:
    axes[0].plot(*zip(*train), label="train loss (scheduled weights)")
  if val:
    axes[0].plot(*zip(*val), marker="o", label="validation Chamfer")
  axes[0].set_yscale("log")
  axes[0].set_xlabel("step")
  axes[0].legend()
  for key in dice_keys:
    points = [(r["step"], r[key]) for r in records if key in r]
    axes[1].plot(*zip(*points), marker="o", label=key.split("/", 1)[1])
  axes[1].set_xlabel("step")
  axes[1].set_ylabel("validation Dice (network resolution)")
  if dice_keys:
    axes[1].legend()
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
  import io
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100)
  plt.close(figure)
  write_bytes_atomic(output_path, buffer.getvalue())
  return output_path


def plot_dice_boxplot(rows: list[dict], output_path: str) -> str:
  """Plot the per-image Dice of each organ as a box plot into a PNG.

  Args:
    rows: per-image metric rows with "organ" and "dice" keys, as
      `evaluate.evaluate_source` and `evaluate.evaluate_folders` return them.
    output_path: PNG file to write.

  Returns:
    `output_path`.

  Raises:
    ValueError: `rows` is empty.
  """
  if not rows:
    raise ValueError(f"no metric rows to plot into {output_path}; evaluate at least one image")
  organs = list(dict.fromkeys(row["organ"] for row in rows))
  values = [[float(row["dice"]) for row in rows if row["organ"] == organ] for organ in organs]
  figure, axis = plt.subplots(figsize=(1.6 * len(organs) + 2.5, 4))
  axis.boxplot(values)
  axis.set_xticks(range(1, len(organs) + 1), organs)
  # Each organ's image count, because a box of 3 images reads like one of 300.
  counts = ", ".join(f"{organ}: {len(organ_values)} images"
                     for organ, organ_values in zip(organs, values))
  axis.set_xlabel(f"organ ({counts})")
  axis.set_ylabel("Dice")
  axis.set_ylim(0.0, 1.0)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
  import io
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100)
  plt.close(figure)
  write_bytes_atomic(output_path, buffer.getvalue())
  return output_path
