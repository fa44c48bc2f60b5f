"""Data parallelism over a one-axis device mesh.

The batch axis is split over every device (`jax.devices()`, all hosts after
`jax.distributed.initialize()`); parameters and optimizer state are
replicated. The same jitted step runs on one device or many: XLA inserts the
gradient all-reduce because the loss averages over the sharded batch axis.
`train.batch_size` is the global batch, summed over all devices of all hosts.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def make_mesh(devices=None) -> Mesh:
  """Return a mesh with one `batch` axis over `devices` (default: every device of every host)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (BATCH_AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Place every array of `tree` on all devices of `mesh`."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Split each array's leading (batch) axis evenly over the devices of `mesh`.

  Every host passes the same global batch `[B, ...]`; each device receives
  its own rows of it, so a host only copies the rows of its local devices.
  """
  sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  # NOTE: this multi-host path has only been run with one process.
  return jax.tree.map(
      lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda index: x[index]),
      batch)
