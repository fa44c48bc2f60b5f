"""Pieces shared by the benchmark scripts: timing, compiled memory, machine and output.

The scripts run as `python experiments/<script>.py`, so Python finds this
module next to them.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any, Callable, Sequence

import jax


def median_seconds(function: Callable[..., Any], args: Sequence[Any], repeats: int) -> float:
  """Call `function(*args)` once to warm up, then return the median of `repeats` timed calls.

  Each call waits for its results (`jax.block_until_ready`), so the time
  includes the device work, not only the dispatch.
  """
  return interleaved_medians({"function": lambda: function(*args)}, repeats)["function"]


def interleaved_medians(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
  """Return the median seconds of each call, timed in turn: one call of each per round.

  Each call is warmed up once first. Timing the calls alternately rather
  than one after the other exposes them to the same load changes of a
  shared machine, so their ratios are steadier than separate medians.
  """
  for call in calls.values():
    jax.block_until_ready(call())
  times: dict[str, list[float]] = {name: [] for name in calls}
  for _ in range(rounds):
    for name, call in calls.items():
      start = time.perf_counter()
      jax.block_until_ready(call())
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(values) for name, values in times.items()}


def temp_mib(compiled, digits: int) -> float | None:
  """Return the temporary memory XLA reserves for a compiled function, in MiB, or None if unknown."""
  memory = compiled.memory_analysis()
  if memory is None:
    return None
  return round(memory.temp_size_in_bytes / 2**20, digits)


def machine() -> str:
  """Name the processor and count the CPU cores, e.g. "x86_64, 2 CPUs"."""
  return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def environment() -> dict[str, str]:
  """Return the machine, the first JAX device and the JAX version, for a results file."""
  return {"machine": machine(), "device": str(jax.devices()[0]), "jax": jax.__version__}


def write_json(path: str, result: dict[str, Any]) -> None:
  """Write `result` as indented JSON to `path` atomically."""
  from mask_hybridgnet_jax.io.atomic import write_text_atomic

  write_text_atomic(path, json.dumps(result, indent=2) + "\n")
