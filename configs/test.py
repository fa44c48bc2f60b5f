"""A configuration small enough for CPU tests: seconds per run.

  mask-hybridgnet train --config configs/test.py \
      --config.dataset.manual_dir=/path/to/folder --workdir /tmp/run

Its sweep (two members, seconds each on an idle machine) checks the sweep
tools and runs the dual model on a unified graph end to end:

  python experiments/run_sweep.py --config configs/test.py --sweep_dir /tmp/sweep \
      --config.dataset.manual_dir=/path/to/folder
  python experiments/collect_results.py --sweep_dir /tmp/sweep --baseline baseline
"""

import ml_collections

from mask_hybridgnet_jax.defaults import default_config


def get_config() -> ml_collections.ConfigDict:
  config = default_config()
  config.dataset.image_size = 64
  config.graph.scale_factor = 0.05
  config.model.block = "residual"
  config.model.filters = 4
  config.model.latent_dim = 16
  config.train.total_examples = 16
  config.train.batch_size = 2
  config.train.log_every_steps = 2
  config.train.eval_every_steps = 4
  config.train.checkpoint_every_steps = 4
  config.train.eval_batch_size = 2
  return config


def sweep(add):
  add("baseline")
  add("dual_unified", {"model.dual": True, "graph.representation": "unified"})
