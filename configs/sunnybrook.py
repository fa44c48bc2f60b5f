"""Sunnybrook short-axis cardiac MRI on a CPU: input 128, residual encoder blocks.

Organs in node order: lv_myocardium (label 2), whose graph follows the
epicardium, then lv_cavity (label 1), the endocardium. No flips: the left
ventricle's position relative to the right ventricle is fixed. Spacing comes
from the DICOM PixelSpacing, so distances are in mm.

  mask-hybridgnet prepare --dataset sunnybrook --manual_dir /path/to/sunnybrook --data_dir data
  mask-hybridgnet train --config configs/sunnybrook.py \
      --config.dataset.manual_dir=/path/to/sunnybrook --config.dataset.data_dir=data \
      --workdir runs/sunnybrook

NOTE: the stored lv_myocardium mask is a ring, but its graph is one closed
contour (the epicardium), so the rasterisation loss compares a filled
polygon with the ring and penalises the cavity area. The loss starts late
here (at 0.8 T, a guess that no run has checked) and a ring-aware target is
still missing. The bundled copy has only 4 patients, so its splits hold
2, 1 and 1 patients.
"""

import ml_collections

from mask_hybridgnet_jax.defaults import cpu_config


def get_config() -> ml_collections.ConfigDict:
  config = cpu_config()
  config.dataset.name = "sunnybrook"
  config.graph.scale_factor = 0.1
  # The bundled copy has 74 contoured slices, so a shorter run suffices.
  config.train.total_examples = 5_000
  config.loss.raster_start_fraction = 0.8
  return config
