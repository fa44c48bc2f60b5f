"""Default configuration: the published method at its reference settings.

Input 512, SE-ResNeXt encoder, batch 1, 250,000 examples (12-24 h on one GPU).

  mask-hybridgnet train --config configs/default.py \
      --config.dataset.manual_dir=/path/to/folder --workdir runs/default
"""

import ml_collections

from mask_hybridgnet_jax.defaults import default_config


def get_config() -> ml_collections.ConfigDict:
  return default_config()
