"""HC18 fetal head ultrasound on a CPU: input 256, residual encoder blocks.

One organ, fetal_head (label 1), filled from the HC18 head outlines. Flips and
transposes are allowed (set by the `hc18` builder) because the head lies at
any orientation in these images and a mirrored head is still a head. Pixel
size is kept per image, so Hausdorff distances are reported in mm.

  mask-hybridgnet prepare --dataset hc18 --manual_dir /path/to/hc18 --data_dir data
  mask-hybridgnet train --config configs/hc18.py \
      --config.dataset.manual_dir=/path/to/hc18 --config.dataset.data_dir=data \
      --workdir runs/hc18
  mask-hybridgnet evaluate --workdir runs/hc18 --split test

NOTE: the training length below mirrors configs/montgomery.py and has not
been tuned on HC18.
"""

import ml_collections

from mask_hybridgnet_jax.defaults import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.dataset.name = "hc18"
  config.dataset.image_size = 256
  # Reference scale factor outside chest X-ray: 0.1 nodes per boundary pixel.
  config.graph.scale_factor = 0.1
  # Grouped convolutions are about 17x slower than dense ones on XLA:CPU.
  config.model.block = "residual"
  config.train.total_examples = 11_000
  config.train.batch_size = 1
  config.train.log_every_steps = 100
  config.train.eval_every_steps = 500
  config.train.checkpoint_every_steps = 500
  # As in configs/montgomery.py: a short run starts the rasterisation loss
  # at T/2 and uses ten times the reference learning rate.
  config.loss.raster_start_fraction = 0.5
  config.optim.learning_rate = 1e-3
  return config
