"""Figures for the analysis tools, written atomically as PNG files."""

from __future__ import annotations

import io
import os
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mask_hybridgnet_jax.analysis.reconstruction import SurfaceMesh  # noqa: E402
from mask_hybridgnet_jax.analysis.shape import ShapeModes  # noqa: E402
from mask_hybridgnet_jax.analysis.tracking import displacements  # noqa: E402
from mask_hybridgnet_jax.io.atomic import write_bytes_atomic  # noqa: E402


def save_figure(figure, path: str, dpi: int = 100) -> str:
  """Save a matplotlib figure as PNG atomically, close it and return the path."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=dpi)
  plt.close(figure)
  write_bytes_atomic(path, buffer.getvalue())
  return path


def _draw_rings(axis, points: np.ndarray, slices: Sequence[slice], **style) -> None:
  for organ_slice in slices:
    ring = points[organ_slice]
    closed = np.concatenate([ring, ring[:1]])
    axis.plot(closed[:, 0], closed[:, 1], **style)


def _image_axes(axis) -> None:
  # Image convention: y grows downwards.
  axis.set_aspect("equal")
  axis.invert_yaxis()
  axis.set_xticks([])
  axis.set_yticks([])


def plot_shape_modes(modes: ShapeModes, organ_slices: Sequence[slice], path: str,
                     num_modes: int = 3, num_std: float = 2.0) -> str:
  """Draw the mean shape and `mean +- num_std * sd` along the first modes, one panel per mode."""
  count = min(num_modes, modes.modes.shape[0])
  figure, axes = plt.subplots(1, count, figsize=(4 * count, 4), squeeze=False)
  for k, axis in enumerate(axes[0]):
    _draw_rings(axis, modes.mean, organ_slices, color="black", linewidth=1.5, label="mean")
    _draw_rings(axis, modes.shape_at(k, -num_std), organ_slices, color="tab:blue",
                linestyle="--", label=f"-{num_std:g} sd")
    _draw_rings(axis, modes.shape_at(k, num_std), organ_slices, color="tab:red",
                linestyle="--", label=f"+{num_std:g} sd")
    axis.set_title(f"mode {k + 1}: {100 * modes.explained_variance_ratio[k]:.1f}% of variance")
    _image_axes(axis)
    handles, labels = axis.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axis.legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
  figure.tight_layout()
  return save_figure(figure, path)


def plot_atlas(aligned: np.ndarray, mean: np.ndarray, organ_slices: Sequence[slice],
               path: str) -> str:
  """Draw every aligned shape faintly and the mean shape with index-coloured nodes."""
  from mask_hybridgnet_jax.visualize import node_colours

  figure, axis = plt.subplots(figsize=(6, 6))
  for shape in aligned:
    _draw_rings(axis, shape, organ_slices, color="0.6", linewidth=0.5, alpha=0.5)
  _draw_rings(axis, mean, organ_slices, color="black", linewidth=1.5)
  for organ_slice in organ_slices:
    ring = mean[organ_slice]
    axis.scatter(ring[:, 0], ring[:, 1], c=node_colours(len(ring)) / 255.0, s=12, zorder=3)
  axis.set_title(f"Procrustes mean of {len(aligned)} graphs")
  _image_axes(axis)
  figure.tight_layout()
  return save_figure(figure, path)


def plot_displacements(trajectories: Mapping[str, np.ndarray], path: str,
                       frame_interval: float | None = None) -> str:
  """Plot each node's distance from its frame-0 position over time, one panel per organ."""
  from mask_hybridgnet_jax.visualize import node_colours

  organs = list(trajectories)
  figure, axes = plt.subplots(len(organs), 1, figsize=(8, 3 * len(organs)), squeeze=False)
  for axis, organ in zip(axes[:, 0], organs):
    moved = displacements(trajectories[organ])
    time = np.arange(moved.shape[0]) * (frame_interval or 1.0)
    colours = node_colours(moved.shape[1]) / 255.0
    for i in range(moved.shape[1]):
      axis.plot(time, moved[:, i], color=colours[i], linewidth=0.8)
    axis.plot(time, moved.mean(axis=1), color="black", linewidth=2, label="mean over nodes")
    axis.set_title(organ)
    axis.set_ylabel("displacement from frame 0 (px)")
    axis.legend(fontsize=8)
  axes[-1, 0].set_xlabel("time (s)" if frame_interval else "frame")
  figure.tight_layout()
  return save_figure(figure, path)


def plot_correspondence(results, path: str) -> str:
  """Bar chart of the per-landmark test error, model against the arc-length baseline."""
  figure, axes = plt.subplots(len(results), 1, figsize=(10, 3 * len(results)), squeeze=False)
  for axis, result in zip(axes[:, 0], results):
    landmarks = np.arange(result.errors.shape[1])
    axis.bar(landmarks - 0.2, result.errors.mean(axis=0), width=0.4, label="model nodes")
    axis.bar(landmarks + 0.2, result.baseline_errors.mean(axis=0), width=0.4,
             label="arc-length baseline")
    axis.set_title(f"{result.organ}: {result.mean_error:.2f} px vs "
                   f"{result.baseline_mean_error:.2f} px baseline")
    axis.set_xlabel("landmark")
    axis.set_ylabel("mean test error (px)")
    axis.legend(fontsize=8)
  figure.tight_layout()
  return save_figure(figure, path)


def plot_agreement(predicted: Sequence[float], reference: Sequence[float], path: str,
                   unit: str = "mm", title: str = "") -> str:
  """Scatter of predicted against reference values with the identity line."""
  predicted, reference = np.asarray(predicted), np.asarray(reference)
  figure, axis = plt.subplots(figsize=(5, 5))
  axis.scatter(reference, predicted, s=10)
  low = float(min(predicted.min(), reference.min()))
  high = float(max(predicted.max(), reference.max()))
  axis.plot([low, high], [low, high], color="black", linewidth=0.8)
  axis.set_xlabel(f"reference ({unit})")
  axis.set_ylabel(f"predicted ({unit})")
  if title:
    axis.set_title(title)
  figure.tight_layout()
  return save_figure(figure, path)


def plot_surfaces(meshes: Mapping[str, SurfaceMesh], path: str) -> str:
  """Draw triangle meshes (mm) in one 3-D view, one colour per organ."""
  from mpl_toolkits.mplot3d.art3d import Poly3DCollection

  figure = plt.figure(figsize=(6, 6))
  axis = figure.add_subplot(projection="3d")
  colours = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple")
  low, high = None, None
  for index, (organ, mesh) in enumerate(meshes.items()):
    triangles = mesh.vertices[mesh.faces]
    collection = Poly3DCollection(triangles, alpha=0.35, edgecolor="0.3", linewidth=0.1,
                                  facecolor=colours[index % len(colours)], label=organ)
    axis.add_collection3d(collection)
    low = mesh.vertices.min(axis=0) if low is None else np.minimum(low, mesh.vertices.min(0))
    high = mesh.vertices.max(axis=0) if high is None else np.maximum(high, mesh.vertices.max(0))
  if low is not None:
    centre, radius = (low + high) / 2, float(np.max(high - low)) / 2
    for setter, c in zip((axis.set_xlim, axis.set_ylim, axis.set_zlim), centre):
      setter(c - radius, c + radius)
  axis.set_xlabel("x (mm)")
  axis.set_ylabel("y (mm)")
  axis.set_zlabel("slice position (mm)")
  axis.legend(fontsize=8)
  figure.tight_layout()
  return save_figure(figure, path)
