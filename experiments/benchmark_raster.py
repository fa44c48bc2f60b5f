"""Memory and speed of the soft rasteriser against the dense reference.

For each vertex count, compiles the gradient of `sum(soft mask)` with
respect to the polygon and reports XLA's temporary memory for it, then
times the compiled gradient (median of `--repeats` calls). The dense
version materialises every pixel-segment distance; at large vertex counts
it is only compiled, not run, when its temporary memory exceeds
`--max_run_mib`.

  python experiments/benchmark_raster.py --size 256 --vertices 64 256 512
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from mask_hybridgnet_jax.losses.raster import soft_rasterize, soft_rasterize_dense

from bench_common import environment, median_seconds, write_json


def _star(num_vertices: int, size: int) -> np.ndarray:
  angles = np.linspace(0, 2 * np.pi, num_vertices, endpoint=False)
  radius = size * (0.3 + 0.08 * np.sin(5 * angles))
  centre = size / 2
  return np.stack([centre + radius * np.cos(angles), centre + radius * np.sin(angles)],
                  -1).astype(np.float32)


def measure(rasterize, polygon: np.ndarray, size: int, repeats: int, max_run_mib: float):
  grad = jax.jit(jax.grad(lambda p: jnp.sum(rasterize(p, size, size))))
  compiled = grad.lower(jnp.asarray(polygon)).compile()
  temp_mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
  seconds = None
  if temp_mib <= max_run_mib:
    seconds = median_seconds(compiled, (polygon,), repeats)
  return temp_mib, seconds


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", type=int, default=256, help="mask height and width, px")
  parser.add_argument("--vertices", type=int, nargs="+", default=[64, 256, 512])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--max_run_mib", type=float, default=2048.0,
                      help="compile but do not run a version needing more temporary memory")
  parser.add_argument("--output", default=None, help="JSON file for the results")
  args = parser.parse_args(argv)
  rows = []
  for count in args.vertices:
    polygon = _star(count, args.size)
    chunked = measure(soft_rasterize, polygon, args.size, args.repeats, args.max_run_mib)
    dense = measure(soft_rasterize_dense, polygon, args.size, args.repeats, args.max_run_mib)
    rows.append({
        "vertices": count, "size": args.size,
        "chunked_temp_mib": round(chunked[0], 2), "dense_temp_mib": round(dense[0], 2),
        "chunked_grad_seconds": chunked[1] and round(chunked[1], 4),
        "dense_grad_seconds": dense[1] and round(dense[1], 4),
    })
    print(json.dumps(rows[-1]), flush=True)
  if args.output:
    write_json(args.output, {"rows": rows, **environment()})
  return 0


if __name__ == "__main__":
  sys.exit(main())
