"""colab/demo.ipynb runs top to bottom on a CPU with its tiny configuration."""

from __future__ import annotations

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "colab" / "demo.ipynb"
# Seconds a single cell may run. The whole notebook took 12.6 minutes in the
# tiny configuration on 2 CPU cores shared with a load average of about 17,
# most of it compiling the train step (249 s). NOTE: its time on an idle
# machine has not been measured.
CELL_TIMEOUT_SECONDS = 600


@pytest.fixture(scope="module")
def notebook():
  return nbformat.read(NOTEBOOK, as_version=4)


@pytest.fixture(scope="module")
def executed(notebook, tmp_path_factory):
  """The notebook after execution, and the folder it ran in."""
  workdir = tmp_path_factory.mktemp("notebook")
  environment = {
      "MASK_HYBRIDGNET_NOTEBOOK_TINY": "1",
      # The kernel imports this checkout's package, not another installed copy.
      "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
      # Compilation dominates the run time of the tiny configuration on CPU.
      "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
      "JAX_PLATFORMS": "cpu",
  }
  saved = {key: os.environ.get(key) for key in environment}
  os.environ.update(environment)
  try:
    copy = nbformat.from_dict(notebook)
    NotebookClient(copy, timeout=CELL_TIMEOUT_SECONDS, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
  finally:
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
  return copy, workdir


def test_committed_notebook_has_no_outputs(notebook):
  for index, cell in enumerate(notebook.cells):
    if cell.cell_type != "code":
      continue
    assert cell.outputs == [], f"code cell {index} has stored outputs; clear them before committing"
    assert cell.execution_count is None, f"code cell {index} has an execution count"


def test_committed_notebook_is_valid(notebook):
  nbformat.validate(notebook)


def test_notebook_uses_python3_kernel(notebook):
  assert notebook.metadata.kernelspec.name == "python3"


def test_notebook_runs_without_errors(executed):
  cells, _ = executed
  for index, cell in enumerate(cells.cells):
    if cell.cell_type != "code":
      continue
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert errors == [], f"code cell {index} raised {errors[0].ename}: {errors[0].evalue}"


def test_notebook_draws_every_figure(executed):
  cells, _ = executed
  figures = sum(1 for cell in cells.cells if cell.cell_type == "code"
                for output in cell.outputs if "image/png" in output.get("data", {}))
  # Data, training curve, Dice box plot, graphs, uncertainty, shape modes, own overlay.
  assert figures == 7


def test_notebook_writes_training_metrics(executed):
  _, workdir = executed
  assert (workdir / "mask_hybridgnet_notebook" / "run" / "metrics.jsonl").is_file()


def test_notebook_predicts_own_folder(executed):
  _, workdir = executed
  outputs = workdir / "mask_hybridgnet_notebook" / "my_predictions"
  assert len(list(outputs.glob("*_overlay.png"))) == 10
  assert len(list(outputs.glob("*.json"))) == 10
