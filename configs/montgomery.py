"""Montgomery chest X-rays on a CPU: input 256, residual encoder blocks.

Right lung (label 1) and left lung (label 2); no left/right flips because the
two lungs are different organs. Trains in about 40 minutes on 2 CPU cores
(13,000 examples, about 5.5 examples per second with the rasterisation
loss on; see docs/results.md).

  mask-hybridgnet train --config configs/montgomery.py \
      --config.dataset.manual_dir=/path/to/montgomery --workdir runs/montgomery
  mask-hybridgnet evaluate --workdir runs/montgomery --split test
"""

import ml_collections

from mask_hybridgnet_jax.defaults import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.dataset.name = "montgomery"
  config.dataset.image_size = 256
  # Reference scale factor for chest X-ray.
  config.graph.scale_factor = 0.05
  # Grouped convolutions are about 17x slower than dense ones on XLA:CPU.
  config.model.block = "residual"
  config.train.total_examples = 13_000
  config.train.batch_size = 4
  config.train.log_every_steps = 25
  config.train.eval_every_steps = 250
  config.train.checkpoint_every_steps = 250
  # Ten times the reference rate, because the run is twenty times shorter:
  # at 1e-4 the Chamfer loss fell about three times slower in a 4-image
  # overfitting check.
  config.optim.learning_rate = 1e-3
  return config
