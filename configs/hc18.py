"""HC18 fetal head ultrasound on a CPU: input 128, residual encoder blocks.

One organ, fetal_head (label 1), filled from the HC18 head outlines. Flips and
transposes are allowed (set by the `hc18` builder) because the head lies at
any orientation in these images and a mirrored head is still a head. Pixel
size is kept per image, so Hausdorff distances are reported in mm.

  mask-hybridgnet prepare --dataset hc18 --manual_dir /path/to/hc18 --data_dir data
  mask-hybridgnet train --config configs/hc18.py \
      --config.dataset.manual_dir=/path/to/hc18 --config.dataset.data_dir=data \
      --workdir runs/hc18
  mask-hybridgnet evaluate --workdir runs/hc18 --split test

NOTE: the training settings come from `cpu_config`, chosen on Montgomery; they have not
been tuned on HC18.
"""

import ml_collections

from mask_hybridgnet_jax.defaults import cpu_config


def get_config() -> ml_collections.ConfigDict:
  config = cpu_config()
  config.dataset.name = "hc18"
  # Reference scale factor outside chest X-ray: 0.1 nodes per boundary pixel.
  config.graph.scale_factor = 0.1
  return config
