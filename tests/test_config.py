"""Config files and `--config.key=value` overrides."""

import pathlib

import ml_collections
import pytest

from mask_hybridgnet_jax import config_utils
from mask_hybridgnet_jax.defaults import default_config

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.py")), ids=lambda p: p.name)
def test_every_config_file_loads(path):
  config = config_utils.load_config_file(path)
  assert isinstance(config, ml_collections.ConfigDict)
  # Every config keeps the full set of keys of the default.
  assert set(config_utils.all_keys(config)) >= set(config_utils.all_keys(default_config()))


def test_override_sets_typed_values():
  config = default_config()
  config_utils.apply_overrides(config, [
      "train.batch_size=8", "optim.learning_rate=0.001", "model.block=residual",
      "augment.enabled=False", "graph.node_overrides.right_lung=96"])
  assert config.train.batch_size == 8
  assert config.optim.learning_rate == pytest.approx(0.001)
  assert isinstance(config.optim.learning_rate, float)
  assert config.model.block == "residual"
  assert config.augment.enabled is False
  assert config.graph.node_overrides.right_lung == 96


def test_unknown_key_names_nearest():
  config = default_config()
  with pytest.raises(config_utils.ConfigError, match='Did you mean "optim.learning_rate"'):
    config_utils.apply_overrides(config, ["optim.lerning_rate=1"])


def test_unknown_top_level_key():
  config = default_config()
  with pytest.raises(config_utils.ConfigError, match='unknown config key "lerning_rate"'):
    config_utils.apply_overrides(config, ["lerning_rate=1"])


def test_wrong_value_type_rejected():
  config = default_config()
  with pytest.raises(config_utils.ConfigError, match="expected an integer"):
    config_utils.apply_overrides(config, ["train.batch_size=2.5"])
  with pytest.raises(config_utils.ConfigError, match="expected True or False"):
    config_utils.apply_overrides(config, ["augment.enabled=1"])


def test_group_key_rejected():
  config = default_config()
  with pytest.raises(config_utils.ConfigError, match="group of settings"):
    config_utils.apply_overrides(config, ["train=3"])


def test_missing_config_file():
  with pytest.raises(config_utils.ConfigError, match="config file not found"):
    config_utils.load_config_file("/nonexistent/config.py")


def test_missing_manual_dir_names_key():
  from mask_hybridgnet_jax.train.loop import validate_config

  with pytest.raises(config_utils.ConfigError, match="dataset.manual_dir"):
    validate_config(default_config())


def test_json_round_trip():
  config = default_config()
  again = config_utils.config_from_json(config_utils.config_to_json(config))
  assert again.to_dict() == config.to_dict()


def test_override_adds_builder_option():
  config = default_config()
  config_utils.apply_overrides(config, ["dataset.builder_options.mask_size=256"])
  assert config.dataset.builder_options.mask_size == 256
