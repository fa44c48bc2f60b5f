"""JSRT organ masks to graphs on a CPU: the encoder reads the 5 organ masks.

The `jsrt_contours` dataset has no images: its five organs (right_lung,
left_lung, heart, right_clavicle, left_clavicle) are the HybridGNet landmark
polygons filled to masks of `mask_size` pixels, split by the published lists.
The model reads those masks (one input channel per organ) and returns graphs
whose nodes correspond across patients. No flips: left and right organs are
different organs.

  mask-hybridgnet prepare --dataset jsrt_contours --manual_dir /path/to/jsrt_landmarks \
      --data_dir data --option mask_size=512
  mask-hybridgnet train --config configs/jsrt_mask2graph.py \
      --config.dataset.manual_dir=/path/to/jsrt_landmarks --config.dataset.data_dir=data \
      --workdir runs/jsrt_mask2graph

`config.input = "masks"` makes the encoder read the five organ masks instead
of an image, in training, evaluation and `mask-hybridgnet mask2graph`.
"""

import ml_collections

from mask_hybridgnet_jax.defaults import cpu_config

NUM_ORGANS = 5


def get_config() -> ml_collections.ConfigDict:
  config = cpu_config()
  config.dataset.name = "jsrt_contours"
  # Side of the masks the 1024-frame polygons are filled into.
  config.dataset.builder_options.mask_size = 512
  # "masks": the encoder reads the organ masks instead of an image.
  config.input = "masks"
  config.model.input_channels = NUM_ORGANS
  # Reference scale factor for chest X-ray.
  config.graph.scale_factor = 0.05
  return config
