"""Profile the train step: a JAX profiler trace and a text summary of its top ops.

Compiles the train step of a config on a synthetic batch (as
benchmark_train.py does), runs it `--warmup` times, then records `--steps`
steps with `jax.profiler.trace` into `<output_dir>/trace`. The trace opens in
TensorBoard's profile plugin or in Perfetto (`*.trace.json.gz`). It then reads
the trace back with `jax.profiler.ProfileData` and writes
`<output_dir>/top_ops.txt`: the XLA op events of every plane and line,
grouped by name, sorted by total time, with their share of all op time.
On CPU the events are the XLA thunks and fused kernels of the step, named
after the HLO instructions (`convolution.12`, `fusion.3`, ...).
`<output_dir>/hlo.txt` contains the optimised HLO, so that a name in the
summary can be looked up there.

  python experiments/profile_train_step.py --config configs/montgomery.py \
      --steps 3 --output_dir /tmp/profile_train_step
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _is_xla_op(line_name: str, event_name: str) -> bool:
  """True for an XLA kernel event; False for Python frames and executor wrappers.

  The wrappers (`ThunkExecutor::Execute`, the Python `$file:line` frames) span
  the kernels they run, so counting them too would count the same time twice.
  Thread-pool waits (`SlinkyThreadPool::Await`) are not ops either. HLO
  instruction names never contain "::", while these runtime events do.
  """
  return (line_name != "python" and not event_name.startswith("$")
          and "::" not in event_name)


def summarise_trace(trace_dir: str, top: int) -> str:
  """Return a table of the `top` XLA ops by total time over all `.xplane.pb` files.

  Shares are of the summed time of all XLA op events, which on CPU run on
  several threads at once and can add up to more than the wall time.
  """
  paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  if not paths:
    raise FileNotFoundError(f"no .xplane.pb file under {trace_dir}; the trace was not written")
  totals: dict[tuple[str, str], float] = collections.defaultdict(float)
  counts: dict[tuple[str, str], int] = collections.defaultdict(int)
  for path in paths:
    data = jax.profiler.ProfileData.from_file(path)
    for plane in data.planes:
      for line in plane.lines:
        for event in line.events:
          if not _is_xla_op(line.name, event.name):
            continue
          key = (plane.name, event.name)
          totals[key] += event.duration_ns
          counts[key] += 1
  grand_total = sum(totals.values()) or 1.0
  ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
  lines = [f"{'total ms':>10} {'share':>6} {'calls':>6}  name  [plane]"]
  for (where, name), duration in ranked:
    lines.append(f"{duration / 1e6:10.2f} {duration / grand_total:6.1%} "
                 f"{counts[(where, name)]:6d}  {name}  [{where}]")
  return "\n".join(lines) + "\n"


def run(config_path: str, output_dir: str, steps: int, warmup: int, top: int,
        raster_on: bool) -> str:
  from benchmark_train import _synthetic_batch
  from mask_hybridgnet_jax.config_utils import load_config_file
  from mask_hybridgnet_jax.io.atomic import write_text_atomic
  from mask_hybridgnet_jax.models.hybridgnet import build_model
  from mask_hybridgnet_jax.organs import DatasetMetadata, Organ
  from mask_hybridgnet_jax.topology import GraphTemplate
  from mask_hybridgnet_jax.train.state import create_train_state
  from mask_hybridgnet_jax.train.step import make_train_step

  config = load_config_file(config_path)
  metadata = DatasetMetadata(organs=(Organ("right_lung", 1), Organ("left_lung", 2)))
  # Mean boundary lengths of the Montgomery training split at 512 x 512.
  template = GraphTemplate.from_boundary_lengths(
      metadata, {"right_lung": 878.0, "left_lung": 866.0},
      scale=config.graph.scale_factor, num_levels=config.graph.num_levels)
  model = build_model(config.model, template)
  batch = jax.device_put(_synthetic_batch(config, template, points_budget=1152))
  state = create_train_state(model, config, jax.random.PRNGKey(0))
  if raster_on:
    # Any step past raster_start_fraction * T has the rasterisation loss on.
    state = state.replace(step=jnp.asarray(
        int(np.ceil(config.train.total_examples / config.train.batch_size)) - 1,
        jnp.int32))
  compiled = jax.jit(make_train_step(model, template, config, metadata),
                     donate_argnums=(0,)).lower(state, batch).compile()
  os.makedirs(output_dir, exist_ok=True)
  write_text_atomic(os.path.join(output_dir, "hlo.txt"), compiled.as_text())
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)

  trace_dir = os.path.join(output_dir, "trace")
  start = time.perf_counter()
  with jax.profiler.trace(trace_dir):
    for _ in range(steps):
      state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
  elapsed = time.perf_counter() - start
  header = (f"config {config_path}, {steps} profiled step(s), raster loss "
            f"{'on' if raster_on else 'off'}, {elapsed / steps:.3f} s per step with "
            f"profiling, {jax.devices()[0]}\n")
  summary = header + summarise_trace(trace_dir, top)
  write_text_atomic(os.path.join(output_dir, "top_ops.txt"), summary)
  return summary


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/montgomery.py")
  parser.add_argument("--output_dir", default="/tmp/profile_train_step")
  parser.add_argument("--steps", type=int, default=3, help="profiled steps")
  parser.add_argument("--warmup", type=int, default=2, help="steps run before profiling")
  parser.add_argument("--top", type=int, default=30, help="rows of the summary")
  parser.add_argument("--raster_off", action="store_true",
                      help="profile a step before the rasterisation loss starts")
  args = parser.parse_args(argv)
  print(run(args.config, args.output_dir, args.steps, args.warmup, args.top,
            raster_on=not args.raster_off))
  return 0


if __name__ == "__main__":
  sys.exit(main())
