"""Per-organ Dice box plots written by `evaluate`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mask_hybridgnet_jax import evaluate, visualize


def _rows() -> list[dict]:
  rng = np.random.default_rng(0)
  rows = []
  for index in range(5):
    for organ in ("right_lung", "left_lung"):
      rows.append({"id": f"case{index}", "organ": organ, "dice": float(rng.uniform(0.5, 1.0)),
                   "hausdorff": 3.0, "assd": 1.0, "unit": "px"})
  return rows


def test_boxplot_writes_png(tmp_path):
  path = visualize.plot_dice_boxplot(_rows(), str(tmp_path / "plots" / "dice.png"))
  with Image.open(path) as image:
    assert image.format == "PNG"
    assert image.width > 100
    assert image.height > 100


def test_boxplot_rejects_empty_rows(tmp_path):
  with pytest.raises(ValueError, match="no metric rows"):
    visualize.plot_dice_boxplot([], str(tmp_path / "dice.png"))


def test_write_results_adds_plot(tmp_path):
  paths = evaluate.write_results(_rows(), str(tmp_path))
  assert paths["dice_plot"] == str(tmp_path / "dice_boxplot.png")
  assert (tmp_path / "dice_boxplot.png").is_file()
  assert (tmp_path / "metrics.csv").is_file()


def test_write_results_without_rows_has_no_plot(tmp_path):
  paths = evaluate.write_results([], str(tmp_path))
  assert "dice_plot" not in paths
  assert not (tmp_path / "dice_boxplot.png").exists()
