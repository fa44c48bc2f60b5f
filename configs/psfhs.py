"""PSFHS intrapartum ultrasound on a CPU: input 128, residual encoder blocks.

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

from mask_hybridgnet_jax.defaults import cpu_config


def get_config() -> ml_collections.ConfigDict:
  config = cpu_config()
  config.dataset.name = "psfhs"
  # Reference scale factor outside chest X-ray: 0.1 nodes per boundary pixel.
  config.graph.scale_factor = 0.1
  return config


def sweep(add):
  """Add the published ablations: graph representation and raster loss."""
  add("baseline")
  add("unified", {"graph.representation": "unified"})
  add("no_raster", {"loss.raster_enabled": False})
