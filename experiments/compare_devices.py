"""Train the multi-device test's model on one device and on a mesh of all devices, side by side.

Uses the model, batches and seed of `tests/multidevice_worker.py` (configs/test.py
at batch size 4) and prints, per step, both losses and gradient norms and
their relative differences. `--optimizer sgd` replaces Adam with plain
gradient descent at the same learning rate. With Adam, it also lists the
first step's gradient components whose sign differs between the two runs
(Adam's first moment is 0.1 times the first gradient).

  XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
      python experiments/compare_devices.py --steps 3 --optimizer adam
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np
import optax

# The same compiler setting as the test, so that the numbers match its runs.
jax.config.update("jax_disable_most_optimizations", True)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))

import multidevice_worker as worker  # noqa: E402
from mask_hybridgnet_jax.models.hybridgnet import build_model  # noqa: E402
from mask_hybridgnet_jax.train import sharding  # noqa: E402
from mask_hybridgnet_jax.train.state import create_train_state  # noqa: E402
from mask_hybridgnet_jax.train.step import make_train_step  # noqa: E402


def _first_moments(state) -> dict[str, np.ndarray]:
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get(state.opt_state))[0]
  return {jax.tree_util.keystr(path): np.asarray(value) for path, value in flat
          if ".mu" in jax.tree_util.keystr(path)}


def train(config, template, model, batches, optimizer: str, mesh=None):
  """Return per-step metrics and the first step's Adam first moments (Adam only)."""
  state = create_train_state(model, config, jax.random.PRNGKey(0))
  if optimizer == "sgd":
    tx = optax.sgd(worker.LEARNING_RATE)
    state = state.replace(tx=tx, opt_state=tx.init(state.params))
  step = jax.jit(make_train_step(model, template, config, worker.METADATA))
  if mesh is not None:
    state = sharding.replicate(state, mesh)
  records, moments = [], None
  for index, batch in enumerate(batches):
    if mesh is not None:
      batch = sharding.shard_batch(batch, mesh)
    state, metrics = step(state, batch)
    records.append({"loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"])})
    if index == 0 and optimizer == "adam":
      moments = _first_moments(state)
  return records, moments


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=3, help="train steps to compare")
  parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
  parser.add_argument("--propagation", choices=("dense", "segment_sum"), default=None,
                      help="graph propagation (default: the config's)")
  parser.add_argument("--total_examples", type=int, default=None,
                      help="training length T, which sets when the raster loss starts "
                           "(default: the config's)")
  args = parser.parse_args(argv)
  if jax.device_count() < 2:
    print("error: only one device; set XLA_FLAGS=--xla_force_host_platform_device_count=4",
          file=sys.stderr)
    return 2

  config, template, model = worker.build_setup()
  if args.propagation:
    config.model.propagation = args.propagation
  if args.total_examples:
    config.train.total_examples = args.total_examples
  model = build_model(config.model, template)
  batches = worker.make_batches(config, num_batches=args.steps)

  single, single_moments = train(config, template, model, batches, args.optimizer)
  sharded, sharded_moments = train(config, template, model, batches, args.optimizer,
                             sharding.make_mesh())

  print(f"optimizer {args.optimizer}, one device against {jax.device_count()}")
  print("step | loss, one | loss, mesh | relative | grad norm, one | grad norm, mesh | relative")
  for index, (a, b) in enumerate(zip(single, sharded), start=1):
    print(f"{index} | {a['loss']:.8g} | {b['loss']:.8g} | "
          f"{abs(a['loss'] - b['loss']) / abs(a['loss']):.2g} | {a['grad_norm']:.8g} | "
          f"{b['grad_norm']:.8g} | {abs(a['grad_norm'] - b['grad_norm']) / a['grad_norm']:.2g}")
  if single_moments is not None:
    print("first-step gradient components with different signs (path, index, one, mesh, "
          "largest magnitude in that leaf):")
    for path, value in single_moments.items():
      gradient_single, gradient_sharded = value / 0.1, sharded_moments[path] / 0.1
      for index in np.argwhere(np.sign(gradient_single) != np.sign(gradient_sharded))[:5]:
        index = tuple(int(i) for i in index)
        print(f"  {path} {index} {gradient_single[index]:.3g} {gradient_sharded[index]:.3g} "
              f"{np.abs(gradient_single).max():.3g}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
