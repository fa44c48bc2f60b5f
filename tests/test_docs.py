"""The generated CLI and configuration references match the code."""

from __future__ import annotations

import argparse
import importlib.util
import pathlib

import pytest

from mask_hybridgnet_jax import cli
from mask_hybridgnet_jax.defaults import default_config

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def generate():
  spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name", ["cli.md", "configuration.md"])
def test_committed_reference_is_current(generate, name):
  files = {path.name: text for path, text in generate.generated_files().items()}
  committed = (ROOT / "docs" / name).read_text(encoding="utf-8")
  assert committed == files[name], f"docs/{name} is stale: run `python docs/generate.py`"


def test_cli_reference_lists_every_option(generate):
  text = generate.render_cli()
  parser = cli.build_parser()
  subcommands = generate._subcommands(parser)
  assert {"demo", "datasets", "prepare", "train", "predict", "evaluate"} <= set(subcommands)
  for name, (sub, _) in subcommands.items():
    assert f"## `{name}`" in text
    for action in sub._actions:
      if isinstance(action, argparse._HelpAction):
        continue
      label = action.option_strings[0] if action.option_strings else action.dest
      assert f"| `{label}" in text, f"{name} {label} missing from cli.md"


def test_configuration_reference_lists_every_key(generate):
  text = generate.render_configuration()
  keys = generate._flatten(default_config())
  assert len(keys) > 40
  for key in keys:
    assert f"| `{key}` |" in text, f"{key} missing from configuration.md"


def test_configuration_shows_config_overrides(generate):
  text = generate.render_configuration()
  section = text.split("### `configs/montgomery.py`", 1)[1].split("### `configs/", 1)[0]
  assert '| `dataset.name` | `"montgomery"` | `"mask_folder"` |' in section


def test_default_config_file_matches_reference(generate):
  text = generate.render_configuration()
  section = text.split("### `configs/default.py`", 1)[1].split("### `configs/", 1)[0]
  assert "Same values as `default_config()`." in section


def test_comment_above_assignment_is_description(generate):
  def build():
    config = {}
    # First line of the reason,
    # second line.
    config.alpha = 1
    config.beta = 2
    # Orphan comment before a blank line.

    config.gamma = 3
    return config

  comments = generate._assignment_comments(build, "config")
  assert comments["alpha"] == "First line of the reason, second line."
  assert "beta" not in comments
  assert "gamma" not in comments


def test_field_table_rows_and_continuations(generate):
  docstring = """Summary.

  Fields:
    alpha, beta    bounds of the range,
                   in pixels.
    gamma: one value.
    delta          2.

  After the table.
  """
  table = generate._field_table(docstring, "Fields:")
  assert table["alpha"] == "bounds of the range, in pixels."
  assert table["beta"] == "bounds of the range, in pixels."
  assert table["gamma"] == "one value."
  assert "delta" not in table
  assert "After" not in " ".join(table)


def test_check_mode_reports_stale_file(generate, tmp_path):
  path = tmp_path / "cli.md"
  path.write_text("old\n", encoding="utf-8")
  assert generate.stale_files({path: "new\n"}) == [path]
  path.write_text("new\n", encoding="utf-8")
  assert generate.stale_files({path: "new\n"}) == []
