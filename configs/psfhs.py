"""PSFHS intrapartum ultrasound on a CPU: input 256, residual encoder blocks.

Two organs: pubic_symphysis (label 1) and fetal_head (label 2). Left/right
flips are allowed (set by the `psfhs` builder) because the probe may be held
either way round. Vertical flips and transposes are not, because the probe
is always at the top of the image. The MetaImage spacing of 1 is a
placeholder, so distances are in pixels.

  mask-hybridgnet prepare --dataset psfhs --manual_dir /path/to/psfhs --data_dir data
  mask-hybridgnet train --config configs/psfhs.py \
      --config.dataset.manual_dir=/path/to/psfhs --config.dataset.data_dir=data \
      --workdir runs/psfhs
  mask-hybridgnet evaluate --workdir runs/psfhs --split test

NOTE: the training length below mirrors configs/montgomery.py and has not
been tuned on PSFHS.
"""

import ml_collections

from mask_hybridgnet_jax.defaults import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.dataset.name = "psfhs"
  # The images are 256x256, so the network input keeps their full resolution.
  config.dataset.image_size = 256
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
