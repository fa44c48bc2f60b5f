"""Train-step and checkpoint checks that need several simulated CPU devices.

`tests/test_multidevice.py` runs this file in a subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`, because XLA reads the
flag once, when the CPU backend starts: the pytest process itself keeps its
single device. The functions that build the inputs are also imported by the
test, so both processes train the same model on the same batches.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 \
      python tests/multidevice_worker.py train --dir DIR --output FILE
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np

# Same compiler setting as tests/conftest.py, so that both processes compile
# the step alike and compilation stays short.
jax.config.update("jax_disable_most_optimizations", True)

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _PROJECT_ROOT not in sys.path:
  sys.path.insert(0, _PROJECT_ROOT)

from mask_hybridgnet_jax.config_utils import load_config_file  # noqa: E402
from mask_hybridgnet_jax.contours import fill_polygon  # noqa: E402
from mask_hybridgnet_jax.models.hybridgnet import build_model  # noqa: E402
from mask_hybridgnet_jax.organs import DatasetMetadata, Organ  # noqa: E402
from mask_hybridgnet_jax.topology import GraphTemplate  # noqa: E402
from mask_hybridgnet_jax.train import checkpoint as checkpoint_lib  # noqa: E402
from mask_hybridgnet_jax.train import sharding  # noqa: E402
from mask_hybridgnet_jax.train.state import create_train_state  # noqa: E402
from mask_hybridgnet_jax.train.step import make_train_step  # noqa: E402

# Four images, so that each of four devices gets one.
BATCH_SIZE = 4
NUM_STEPS = 3
POINTS_BUDGET = 128
# The default of configs/test.py, set here so that tests can bound differences by it.
LEARNING_RATE = 1e-4
METADATA = DatasetMetadata(organs=(Organ("right_lung", 1), Organ("left_lung", 2)))


def build_setup():
  """Return (config, template, model) at the sizes of configs/test.py, batch size 4."""
  config = load_config_file(os.path.join(_PROJECT_ROOT, "configs", "test.py"))
  config.train.batch_size = BATCH_SIZE
  config.optim.learning_rate = LEARNING_RATE
  template = GraphTemplate.from_boundary_lengths(
      METADATA, {"right_lung": 878.0, "left_lung": 866.0},
      scale=config.graph.scale_factor, num_levels=config.graph.num_levels)
  model = build_model(config.model, template)
  return config, template, model


def make_batches(config, num_batches: int = NUM_STEPS, seed: int = 0) -> list[dict]:
  """Build seeded batches of two ellipses per image, with filled masks."""
  rng = np.random.default_rng(seed)
  size = config.dataset.image_size
  batches = []
  for _ in range(num_batches):
    image = rng.random((BATCH_SIZE, size, size, 1), dtype=np.float32)
    masks = np.zeros((BATCH_SIZE, 2, size, size), np.float32)
    points = np.zeros((BATCH_SIZE, 2, POINTS_BUDGET, 2), np.float32)
    lengths = np.zeros((BATCH_SIZE, 2), np.int32)
    for b in range(BATCH_SIZE):
      for o in range(2):
        count = int(rng.integers(40, POINTS_BUDGET))
        angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
        centre = np.array([0.3 + 0.4 * o, 0.5]) + rng.normal(0, 0.02, 2)
        radii = np.array([0.12, 0.3]) * rng.uniform(0.9, 1.1, 2)
        contour = centre + radii * np.stack([np.cos(angles), np.sin(angles)], -1)
        points[b, o, :count] = contour
        lengths[b, o] = count
        masks[b, o] = fill_polygon(contour * size, (size, size))
    batches.append({
        "image": image, "masks": masks, "points": points, "lengths": lengths,
        "present": lengths > 0, "valid": np.ones((BATCH_SIZE,), bool),
    })
  return batches


def train_three_steps(config, template, model, mesh=None):
  """Run NUM_STEPS jitted steps from seed 0; return (state, losses, grad norms, trace count).

  Without `mesh` the step runs on the default device; with it, the state is
  replicated and each batch split over the mesh's batch axis.
  """
  state = create_train_state(model, config, jax.random.PRNGKey(0))
  traces = {"count": 0}
  step_fn = make_train_step(model, template, config, METADATA)

  def counted_step(state, batch):
    traces["count"] += 1
    return step_fn(state, batch)

  step = jax.jit(counted_step, donate_argnums=(0,))
  if mesh is not None:
    state = sharding.replicate(state, mesh)
  losses, grad_norms = [], []
  for batch in make_batches(config):
    if mesh is not None:
      batch = sharding.shard_batch(batch, mesh)
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
    grad_norms.append(float(metrics["grad_norm"]))
  return state, losses, grad_norms, traces["count"]


def checkpoint_meta(config, template, state):
  return checkpoint_lib.build_meta(
      config.to_dict(), template.to_dict(), METADATA.to_dict(), state.params)


def flat_params(state) -> dict[str, np.ndarray]:
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
  return {jax.tree_util.keystr(path): np.asarray(value) for path, value in flat}


def train_and_save(save_dir: str, output: str) -> None:
  """Train three steps on a mesh over every device, save the state and the results."""
  config, template, model = build_setup()
  mesh = sharding.make_mesh()
  state, losses, grad_norms, traces = train_three_steps(config, template, model, mesh)
  checkpointer = checkpoint_lib.Checkpointer(save_dir, keep=1)
  checkpointer.save(state, checkpoint_meta(config, template, state))
  checkpointer.close()
  np.savez(os.path.join(save_dir, "params.npz"), **flat_params(state))
  result = {
      "device_count": jax.device_count(),
      "mesh_devices": int(mesh.devices.size),
      "losses": losses,
      "grad_norms": grad_norms,
      "traces": traces,
  }
  with open(output, "w", encoding="utf-8") as f:
    json.dump(result, f)


def restore_replicated(restore_dir: str, output: str) -> None:
  """Restore a checkpoint onto a state replicated over every device, as the loop does."""
  config, template, model = build_setup()
  mesh = sharding.make_mesh()
  target = sharding.replicate(create_train_state(model, config, jax.random.PRNGKey(1)), mesh)
  checkpointer = checkpoint_lib.Checkpointer(restore_dir, keep=1)
  restored = checkpointer.restore_latest(target, checkpoint_meta(config, template, target))
  checkpointer.close()
  params_file = os.path.splitext(output)[0] + ".npz"
  np.savez(params_file, **flat_params(restored))
  leaf = jax.tree.leaves(restored.params)[0]
  result = {
      "restored_step": int(jax.device_get(restored.step)),
      "restored_leaf_devices": len(leaf.sharding.device_set),
      "params_file": params_file,
  }
  with open(output, "w", encoding="utf-8") as f:
    json.dump(result, f)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("mode", choices=("train", "restore"),
                      help="train: three steps, then save to --dir; "
                           "restore: restore the checkpoint in --dir")
  parser.add_argument("--dir", required=True, help="checkpoint workdir")
  parser.add_argument("--output", required=True, help="JSON file for the results")
  args = parser.parse_args(argv)
  if args.mode == "train":
    train_and_save(args.dir, args.output)
  else:
    restore_replicated(args.dir, args.output)
  return 0


if __name__ == "__main__":
  sys.exit(main())
