"""Montgomery chest X-rays on a CPU: input 128, residual encoder blocks.

Right lung (label 1) and left lung (label 2); no left/right flips because the
two lungs are different organs. Trains in about 40 minutes on 2 CPU cores
(24,000 examples at batch size 1; see docs/results.md).

  mask-hybridgnet train --config configs/montgomery.py \
      --config.dataset.manual_dir=/path/to/montgomery --workdir runs/montgomery
  mask-hybridgnet evaluate --workdir runs/montgomery --split test

The ablation sweep (see docs/ablations.md) trains each member as above:

  python experiments/run_sweep.py --config configs/montgomery.py \
      --sweep_dir runs/sweep_montgomery --config.dataset.manual_dir=/path/to/montgomery
  python experiments/collect_results.py --sweep_dir runs/sweep_montgomery --baseline baseline
"""

import ml_collections

from mask_hybridgnet_jax.defaults import cpu_config


def get_config() -> ml_collections.ConfigDict:
  config = cpu_config()
  config.dataset.name = "montgomery"
  # Reference scale factor for chest X-ray.
  config.graph.scale_factor = 0.05
  return config


def sweep(add):
  """Add the published ablations (graph representation, raster loss, pixel decoder) and a bfloat16 encoder."""
  add("baseline")
  add("unified", {"graph.representation": "unified"})
  add("no_raster", {"loss.raster_enabled": False})
  add("dual", {"model.dual": True})
  add("dual_unified", {"model.dual": True, "graph.representation": "unified"})
  add("bf16", {"model.dtype": "bfloat16"})
