"""Shared test fixtures.

Real data is read in place from the `shared/data` folder beside the project
root, or from the folder named by MASK_HYBRIDGNET_TEST_DATA. Tests that need it
skip with the reason when it is absent; `.ci/run` checks that it exists.
"""

import os
import pathlib

import jax
import pytest

# Compilation dominates the run time of small test inputs on CPU.
jax.config.update("jax_disable_most_optimizations", True)

_PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _data_root() -> pathlib.Path:
  override = os.environ.get("MASK_HYBRIDGNET_TEST_DATA")
  if override:
    return pathlib.Path(override)
  return _PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> pathlib.Path:
  """Folder of the real datasets; skips the test when it is missing."""
  root = _data_root()
  if not root.is_dir():
    pytest.skip(f"real test data not found at {root}; set MASK_HYBRIDGNET_TEST_DATA")
  return root


@pytest.fixture(scope="session")
def montgomery_dir(data_root) -> pathlib.Path:
  """The Montgomery folder (images/, masks/, landmarks/)."""
  path = data_root / "montgomery"
  if not (path / "images").is_dir():
    pytest.skip(f"Montgomery data not found at {path}")
  return path
