"""Loading config files and applying `--config.key=value` overrides."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
import types
from typing import Any, Iterable

import ml_collections


class ConfigError(ValueError):
  """Invalid config file, key or value; the message names it."""


def import_config_module(path: str | os.PathLike[str],
                         module_name: str = "_mask_hybridgnet_config") -> types.ModuleType:
  """Import a Python config file as a module, raising ConfigError if it is missing."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ConfigError(f"config file not found: {path}")
  spec = importlib.util.spec_from_file_location(module_name, path)
  if spec is None or spec.loader is None:
    raise ConfigError(f"{path}: not a Python config file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config_file(path: str | os.PathLike[str]) -> ml_collections.ConfigDict:
  """Import a config file and return its `get_config()`."""
  path = os.fspath(path)
  module = import_config_module(path)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path}: a config file must define get_config()")
  config = module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict")
  # Imported here because defaults imports JAX (through augment and the losses).
  from mask_hybridgnet_jax.defaults import default_config

  check_config_keys(config, default_config(), source=path)
  return config


# Groups whose keys are free-form (organ names, a builder's own options), so
# they are not compared with the default config.
FREE_FORM_GROUPS = ("graph.node_overrides", "dataset.builder_options")


def check_config_keys(config: ml_collections.ConfigDict,
                      reference: ml_collections.ConfigDict, source: str) -> None:
  """Check that `config` has exactly the keys of `reference`, or raise ConfigError.

  Unknown keys are listed with the nearest valid key, so a misspelt key in a
  config file fails at load time instead of being ignored.
  """
  config_keys = set(_comparable_keys(config))
  reference_keys = set(_comparable_keys(reference))
  problems = []
  for key in sorted(config_keys - reference_keys):
    close = difflib.get_close_matches(key, sorted(reference_keys), n=1, cutoff=0.5)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    problems.append(f'unknown key "{key}"{hint}')
  for key in sorted(reference_keys - config_keys):
    problems.append(f'missing key "{key}"')
  if problems:
    raise ConfigError(
        f"{source}: {'; '.join(problems)}. Start get_config() from default_config() "
        "and change only the keys it defines.")


def _comparable_keys(config: ml_collections.ConfigDict) -> list[str]:
  return [key for key in all_keys(config)
          if not any(key.startswith(group + ".") for group in FREE_FORM_GROUPS)]


def all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Dotted names of every leaf and sub-config, e.g. "train.batch_size"."""
  keys = []
  for name, value in config.items():
    key = f"{prefix}{name}"
    keys.append(key)
    if isinstance(value, ml_collections.ConfigDict):
      keys.extend(all_keys(value, prefix=f"{key}."))
  return keys


def _parse_value(text: str, current: Any, key: str) -> Any:
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ConfigError(
        f"--config.{key}={text}: not a valid Python literal for this "
        f"{type(current).__name__} key") from None
  if isinstance(current, bool):
    expected, valid = "True or False", isinstance(value, bool)
  elif isinstance(current, int):
    expected, valid = "an integer", isinstance(value, int) and not isinstance(value, bool)
  elif isinstance(current, float):
    expected = "a number"
    valid = isinstance(value, (int, float)) and not isinstance(value, bool)
    if valid:
      value = float(value)
  else:
    expected, valid = "", True
  if not valid:
    raise ConfigError(f"--config.{key}={text}: expected {expected}")
  return value


def _unknown_key_error(key: str, config: ml_collections.ConfigDict) -> ConfigError:
  keys = all_keys(config)
  close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
  hint = f' Did you mean "{close[0]}"?' if close else ""
  return ConfigError(f'unknown config key "{key}".{hint} Valid keys: {", ".join(sorted(keys))}')


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
  """Apply overrides of the form `key=value` (without the `--config.` prefix).

  Values are parsed as Python literals unless the current value is a string.
  Keys under `graph.node_overrides` (organ names) and `dataset.builder_options`
  may be new; any other unknown key is an error that names the nearest valid key.
  """
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"--config.{item}: expected --config.key=value")
    key, text = item.split("=", 1)
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise _unknown_key_error(key, config)
      node = node[part]
    leaf = parts[-1]
    if key.startswith("graph.node_overrides."):
      try:
        node[leaf] = int(text)
      except ValueError:
        raise ConfigError(f"--config.{key}={text}: expected an integer node count") from None
      continue
    if key.startswith("dataset.builder_options.") and leaf not in node:
      # A new builder option: a Python literal, else the text itself.
      try:
        node[leaf] = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        node[leaf] = text
      continue
    if leaf not in node:
      raise _unknown_key_error(key, config)
    if isinstance(node[leaf], ml_collections.ConfigDict):
      raise ConfigError(f"--config.{key}: is a group of settings; set one of its keys")
    node[leaf] = _parse_value(text, node[leaf], key)


def config_to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def config_from_json(text: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(json.loads(text))
