"""Train the multi-device test's model on one device and on a mesh of all devices, side by side.

Uses the model, batches and seed of `tests/multidevice_worker.py` (configs/test.py
at batch size 4) and prints, per step, both losses and gradient norms and
their relative differences. `--optimizer sgd` replaces Adam with plain
gradient descent at the same learning rate. With Adam, it also lists the
first step's gradient components whose sign differs between the two runs
(Adam's first moment is 0.1 times the first gradient).

`--perturb EPS` adds a third run: one device again, with every initial
weight multiplied by (1 + EPS z), z standard normal. At EPS = 1e-7, about
float32's rounding, it shows how far the model's own training moves apart
from a rounding-sized change, with no second device involved.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
      python experiments/compare_devices.py --steps 3 --optimizer adam --perturb 1e-7
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


def _perturbed(params, relative: float):
  """Return the weights multiplied by (1 + relative z), z standard normal from a fixed key."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  return jax.tree.unflatten(treedef, [
      leaf * (1 + relative * jax.random.normal(key, leaf.shape, leaf.dtype))
      for leaf, key in zip(leaves, keys)])


def train(config, template, model, batches, optimizer: str, mesh=None, perturb: float = 0.0):
  """Return per-step metrics and the first step's Adam first moments (Adam only)."""
  state = create_train_state(model, config, jax.random.PRNGKey(0))
  if perturb:
    state = state.replace(params=_perturbed(state.params, perturb))
  if optimizer == "sgd":
    tx = optax.sgd(config.optim.learning_rate)
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
  parser.add_argument("--learning_rate", type=float, default=worker.LEARNING_RATE,
                      help="learning rate of both optimizers (default: the test's)")
  parser.add_argument("--perturb", type=float, default=0.0,
                      help="also train one device from weights perturbed by this relative "
                           "amount (0: skip)")
  parser.add_argument("--total_examples", type=int, default=None,
                      help="training length T, which sets when the raster loss starts "
                           "(default: the config's)")
  args = parser.parse_args(argv)
  if jax.device_count() < 2:
    print("error: only one device; set XLA_FLAGS=--xla_force_host_platform_device_count=4",
          file=sys.stderr)
    return 2

  config, template, model = worker.build_setup()
  config.optim.learning_rate = args.learning_rate
  if args.propagation:
    config.model.propagation = args.propagation
  if args.total_examples:
    config.train.total_examples = args.total_examples
  model = build_model(config.model, template)
  batches = worker.make_batches(config, num_batches=args.steps)

  single, single_moments = train(config, template, model, batches, args.optimizer)
  sharded, sharded_moments = train(config, template, model, batches, args.optimizer,
                             sharding.make_mesh())

  perturbed = (train(config, template, model, batches, args.optimizer, perturb=args.perturb)[0]
               if args.perturb else None)

  def relative(a, b, key):
    return f"{abs(a[key] - b[key]) / abs(a[key]):.2g}"

  print(f"optimizer {args.optimizer}, learning rate {args.learning_rate:g}, "
        f"one device against {jax.device_count()}")
  header = "step | loss, one | loss, mesh | relative | grad norm, one | grad norm, mesh | relative"
  if perturbed:
    header += f" | loss, one perturbed by {args.perturb:g} | relative"
  print(header)
  for index, (a, b) in enumerate(zip(single, sharded), start=1):
    row = (f"{index} | {a['loss']:.8g} | {b['loss']:.8g} | {relative(a, b, 'loss')} | "
           f"{a['grad_norm']:.8g} | {b['grad_norm']:.8g} | {relative(a, b, 'grad_norm')}")
    if perturbed:
      c = perturbed[index - 1]
      row += f" | {c['loss']:.8g} | {relative(a, c, 'loss')}"
    print(row)
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
