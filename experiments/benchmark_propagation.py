"""Graph propagation in the decoder: dense Laplacian product against segment_sum.

Times the graph decoder's forward and backward pass (gradient of a scalar
function of the output positions with respect to the decoder parameters) with
`propagation="dense"` and `propagation="segment_sum"` in one process, for
each batch size, calling the two in turn (one call of each per round). Templates:

  montgomery    right and left lung, node counts from the Montgomery training
                split's mean boundary lengths at scale 0.05 (64 + 64 nodes),
                the template of configs/montgomery.py.
  lungs_heart   352 nodes (128 + 128 + 96), the size of a chest X-ray
                template with two lungs and the heart at input 512.

The encoder is not run: the skips sample random feature maps of the shapes
the residual encoder gives at input 256 (its three deepest stages).

  python experiments/benchmark_propagation.py --template montgomery \
      --batch_sizes 1 4 16 64 --repeats 5 --output /tmp/propagation.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench_common import environment, interleaved_medians, write_json

# Deepest three pre-pool encoder outputs at input 256, filters 16, shallow to
# deep as the encoder returns them: (side, channels).
FEATURE_MAPS = ((64, 64), (32, 128), (16, 256))
LATENT_DIM = 64


def build_template(name: str):
  from mask_hybridgnet_jax.organs import DatasetMetadata, Organ
  from mask_hybridgnet_jax.topology import GraphTemplate

  if name == "montgomery":
    metadata = DatasetMetadata(organs=(Organ("right_lung", 1), Organ("left_lung", 2)))
    # Mean boundary lengths of the Montgomery training split in original pixels.
    return GraphTemplate.from_boundary_lengths(
        metadata, {"right_lung": 878.0, "left_lung": 866.0}, scale=0.05, num_levels=3)
  if name == "lungs_heart":
    metadata = DatasetMetadata(
        organs=(Organ("right_lung", 1), Organ("left_lung", 2), Organ("heart", 3)))
    counts = {"right_lung": 128, "left_lung": 128, "heart": 96}
    return GraphTemplate.from_boundary_lengths(
        metadata, {k: float(v) for k, v in counts.items()}, scale=1.0, num_levels=3,
        overrides=counts)
  raise ValueError(f"template {name!r} is invalid; use montgomery or lungs_heart.")


def _compile_decoder(template, propagation: str, batch_size: int) -> dict:
  """Compile the decoder's forward and backward pass; return its call, compile time and value."""
  from mask_hybridgnet_jax.models.decoder import GraphDecoder

  decoder = GraphDecoder(template=template, propagation=propagation)
  rng = np.random.default_rng(batch_size)
  latent = jnp.asarray(rng.normal(size=(batch_size, LATENT_DIM)).astype(np.float32))
  maps = tuple(
      jnp.asarray(rng.normal(size=(batch_size, side, side, channels)).astype(np.float32))
      for side, channels in FEATURE_MAPS)
  params = decoder.init(jax.random.PRNGKey(0), latent, maps)

  def loss(params):
    positions, level_positions, _ = decoder.apply(params, latent, maps)
    return jnp.sum(positions**2) + sum(jnp.sum(p) for p in level_positions)

  start = time.perf_counter()
  compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
  compile_seconds = time.perf_counter() - start
  value = float(compiled(params)[0])
  return {"call": lambda: compiled(params), "compile_seconds": compile_seconds, "value": value}


def run(template_name: str, batch_sizes: list[int], repeats: int) -> list[dict]:
  template = build_template(template_name)
  rows = []
  for batch_size in batch_sizes:
    dense = _compile_decoder(template, "dense", batch_size)
    segment = _compile_decoder(template, "segment_sum", batch_size)
    medians = interleaved_medians({"dense": dense["call"], "segment_sum": segment["call"]},
                                  repeats)
    dense["seconds"], segment["seconds"] = medians["dense"], medians["segment_sum"]
    row = {
        "template": template_name,
        "nodes": int(sum(template.node_counts)),
        "batch_size": batch_size,
        "dense_seconds": round(dense["seconds"], 5),
        "segment_sum_seconds": round(segment["seconds"], 5),
        "segment_sum_over_dense": round(segment["seconds"] / dense["seconds"], 2),
        "dense_compile_seconds": round(dense["compile_seconds"], 2),
        "segment_sum_compile_seconds": round(segment["compile_seconds"], 2),
        "relative_difference": abs(segment["value"] - dense["value"]) / abs(dense["value"]),
    }
    print(json.dumps(row), flush=True)
    rows.append(row)
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--template", choices=("montgomery", "lungs_heart"), default="montgomery")
  parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 16, 64])
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per setting")
  parser.add_argument("--output", default=None, help="JSON file for the results")
  args = parser.parse_args(argv)
  result = {
      "rows": run(args.template, args.batch_sizes, args.repeats),
      **environment(),
  }
  if args.output:
    write_json(args.output, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())
