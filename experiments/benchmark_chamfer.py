"""Memory and time of the Chamfer distance and its gradient, chunked and not.

For 352 predicted nodes against ground-truth sets of 1k to 16k points it
compiles `value_and_grad(chamfer_distance)` with respect to the nodes, once
unchunked (one `[N, P]` distance matrix) and once walking the points in
chunks of `--chunk_size` rows. It reports XLA's temporary memory of each
compiled function and the median time of `--repeats` calls, measured side
by side in one process.

  python experiments/benchmark_chamfer.py --points 1024 4096 16384 \
      --chunk_size 1024 --repeats 5 --output /tmp/chamfer.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench_common import environment, median_seconds, temp_mib, write_json

NUM_NODES = 352


def _compiled(num_points: int, chunk_size: int | None):
  from mask_hybridgnet_jax.losses.chamfer import chamfer_distance

  def value_and_grad(pred, gt, length):
    return jax.value_and_grad(chamfer_distance)(pred, gt, length, chunk_size=chunk_size)

  pred = jax.ShapeDtypeStruct((NUM_NODES, 2), jnp.float32)
  gt = jax.ShapeDtypeStruct((num_points, 2), jnp.float32)
  length = jax.ShapeDtypeStruct((), jnp.int32)
  start = time.perf_counter()
  compiled = jax.jit(value_and_grad).lower(pred, gt, length).compile()
  return compiled, time.perf_counter() - start


def run(point_counts: list[int], chunk_size: int, repeats: int) -> list[dict]:
  rng = np.random.default_rng(0)
  pred = jnp.asarray(rng.random((NUM_NODES, 2), dtype=np.float32))
  rows = []
  for num_points in point_counts:
    gt = jnp.asarray(rng.random((num_points, 2), dtype=np.float32))
    args = (pred, gt, jnp.asarray(num_points, jnp.int32))
    row = {"nodes": NUM_NODES, "points": num_points, "chunk_size": chunk_size}
    values = {}
    for name, chunk in (("unchunked", None), ("chunked", chunk_size)):
      compiled, compile_seconds = _compiled(num_points, chunk)
      values[name] = float(compiled(*args)[0])
      row[f"{name}_temp_mib"] = temp_mib(compiled, 2)
      row[f"{name}_seconds"] = round(median_seconds(compiled, args, repeats), 5)
      row[f"{name}_compile_seconds"] = round(compile_seconds, 2)
    row["relative_difference"] = abs(values["chunked"] - values["unchunked"]) / values["unchunked"]
    row["chunked_over_unchunked_time"] = round(row["chunked_seconds"] / row["unchunked_seconds"], 2)
    print(json.dumps(row), flush=True)
    rows.append(row)
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--points", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384],
                      help="ground-truth set sizes")
  parser.add_argument("--chunk_size", type=int, default=1024,
                      help="ground-truth rows per chunk of the chunked version")
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per setting")
  parser.add_argument("--output", default=None, help="JSON file for the results")
  args = parser.parse_args(argv)
  result = {
      "rows": run(args.points, args.chunk_size, args.repeats),
      **environment(),
  }
  if args.output:
    write_json(args.output, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())
