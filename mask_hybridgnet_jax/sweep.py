"""Ablation sweeps: train and evaluate several config variants, then tabulate them.

A config file defines a sweep with a plain function next to `get_config`:

  def sweep(add):
    add("baseline")
    add("unified", {"graph.representation": "unified"})

Each `add(name, overrides)` names one member and the config keys it changes.
`run_sweep` trains and evaluates every member in `<sweep_dir>/<name>`. A
member whose `sweep_member.json` exists is finished and skipped; a member
interrupted during training resumes from its latest checkpoint, because
`train_and_evaluate` continues any run it finds in its workdir.
Members share the prepared dataset in `<sweep_dir>/data` unless
`dataset.data_dir` is set. `collect_results` reads every member's per-image metrics and builds one
markdown table with a paired Wilcoxon signed-rank test against a baseline.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import re
import shlex
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mask_hybridgnet_jax import config_utils
from mask_hybridgnet_jax.io.atomic import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
MEMBER_FILE = "sweep_member.json"
RESULTS_FILE = "results.md"
METRICS = (("dice", "Dice"), ("hausdorff", "Hausdorff"), ("assd", "ASSD"))
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SweepError(ValueError):
  """Invalid sweep definition, sweep folder or results; the message names it."""


@dataclasses.dataclass(frozen=True)
class SweepMember:
  """One variant of a sweep.

  Attributes:
    name: folder name of the member's workdir inside the sweep folder.
    overrides: config key (dotted) -> value, applied after the command-line
      overrides that all members share.
  """

  name: str
  overrides: dict[str, Any]

  def override_strings(self) -> list[str]:
    """Return the overrides as `key=value` strings for `config_utils.apply_overrides`."""
    return [f"{key}={value if isinstance(value, str) else repr(value)}"
            for key, value in self.overrides.items()]


def load_sweep(config_path: str) -> list[SweepMember]:
  """Import a config file and collect the members its `sweep(add)` function adds."""
  try:
    module = config_utils.import_config_module(config_path, "_mask_hybridgnet_sweep_config")
  except config_utils.ConfigError as e:
    raise SweepError(str(e)) from e
  define: Callable[[Callable[..., None]], None] | None = getattr(module, "sweep", None)
  if define is None:
    raise SweepError(
        f"{config_path} defines no sweep; add a function `def sweep(add)` that calls "
        "add(name, {config_key: value}) once per member.")

  members: list[SweepMember] = []

  def add(name: str, overrides: Mapping[str, Any] | None = None) -> None:
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
      raise SweepError(
          f"{config_path}: sweep member name {name!r} is invalid; use letters, digits, "
          "'_', '-' and '.', starting with a letter or digit.")
    if any(m.name == name for m in members):
      raise SweepError(f"{config_path}: sweep member {name!r} is added twice.")
    members.append(SweepMember(name, dict(overrides or {})))

  define(add)
  if not members:
    raise SweepError(f"{config_path}: sweep(add) added no members.")
  return members


def member_config(config_path: str, member: SweepMember, common_overrides: Sequence[str]):
  """Return the member's config: the file's `get_config()` with all overrides applied."""
  config = config_utils.load_config_file(config_path)
  config_utils.apply_overrides(config, common_overrides)
  try:
    config_utils.apply_overrides(config, member.override_strings())
  except config_utils.ConfigError as e:
    raise SweepError(f"sweep member {member.name!r} in {config_path}: {e}") from None
  return config


def member_command(config_path: str, sweep_dir: str, common_overrides: Sequence[str],
                   member: str) -> str:
  """Return the shell command that (re)runs one member."""
  parts = ["python", "experiments/run_sweep.py", "--config", config_path,
           "--sweep_dir", sweep_dir, "--only", member]
  parts += [f"--config.{item}" for item in common_overrides]
  return shlex.join(parts)


def run_sweep(
    config_path: str,
    sweep_dir: str,
    common_overrides: Sequence[str] = (),
    only: Sequence[str] | None = None,
    split: str = "test",
    eval_batch_size: int = 8,
) -> dict[str, str]:
  """Train and evaluate each sweep member in `<sweep_dir>/<name>`.

  Finished members (with `sweep_member.json`) are skipped. A failing member
  is logged and the sweep continues with the next one.

  Args:
    config_path: config file with `get_config()` and `sweep(add)`.
    sweep_dir: folder of the member workdirs, `sweep.json` and the results.
    common_overrides: `key=value` overrides applied to every member first
      (for example the dataset folder).
    only: names of the members to run; None runs all.
    split: dataset split evaluated after training.
    eval_batch_size: images per prediction batch in the evaluation.

  Returns:
    member name -> "done", "skipped" or "failed: <error>".
  """
  from mask_hybridgnet_jax.evaluate import evaluate_workdir
  from mask_hybridgnet_jax.train.loop import train_and_evaluate

  members = load_sweep(config_path)
  names = [m.name for m in members]
  unknown = sorted(set(only or ()) - set(names))
  if unknown:
    raise SweepError(f"unknown sweep member(s) {unknown}; {config_path} defines {names}.")
  # Every member's config is built before any training, so a typo in the
  # last member fails at once instead of after hours.
  configs = {m.name: member_config(config_path, m, common_overrides) for m in members}
  for config in configs.values():
    # Members share one prepared dataset instead of preparing it in each workdir.
    if not config.dataset.data_dir:
      config.dataset.data_dir = os.path.join(os.path.abspath(sweep_dir), "data")

  os.makedirs(sweep_dir, exist_ok=True)
  _write_sweep_file(sweep_dir, config_path, common_overrides, members, split)
  status: dict[str, str] = {}
  for member in members:
    if only and member.name not in only:
      continue
    workdir = os.path.join(sweep_dir, member.name)
    marker = os.path.join(workdir, MEMBER_FILE)
    if os.path.exists(marker):
      _check_finished_member(marker, member)
      logger.info("sweep member %s is finished; skipping it.", member.name)
      status[member.name] = "skipped"
      continue
    logger.info("sweep member %s: training in %s with %s", member.name, workdir,
                member.override_strings() or "no overrides")
    start = time.perf_counter()
    try:
      train_and_evaluate(configs[member.name], workdir)
      paths = evaluate_workdir(workdir, split, batch_size=eval_batch_size, progress=False)
    except Exception as e:  # noqa: BLE001 (one failing member must not stop the sweep)
      logger.exception("sweep member %s failed: %s", member.name, e)
      status[member.name] = f"failed: {e}"
      continue
    write_json_atomic(marker, {
        "name": member.name,
        "overrides": member.overrides,
        "common_overrides": list(common_overrides),
        "config": config_path,
        "split": split,
        "metrics_csv": os.path.relpath(paths["csv"], workdir),
        "command": member_command(config_path, sweep_dir, common_overrides, member.name),
        "seconds": round(time.perf_counter() - start, 1),
    })
    logger.info("sweep member %s finished in %.0f s; metrics in %s", member.name,
                time.perf_counter() - start, paths["csv"])
    status[member.name] = "done"
  return status


def _write_sweep_file(sweep_dir: str, config_path: str, common_overrides: Sequence[str],
                      members: Sequence[SweepMember], split: str) -> None:
  path = os.path.join(sweep_dir, SWEEP_FILE)
  data = {
      "config": config_path,
      "common_overrides": list(common_overrides),
      "split": split,
      "members": [{"name": m.name, "overrides": m.overrides} for m in members],
  }
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    fixed = ("config", "common_overrides", "split")
    changed = [key for key in fixed if saved.get(key) != json.loads(json.dumps(data[key]))]
    if changed:
      raise SweepError(
          f"{path} records a sweep with other settings ({', '.join(changed)} differ); use "
          "a new --sweep_dir, or rerun with the recorded settings to resume.")
  # Members may be added to a sweep later, so the member list is rewritten.
  write_json_atomic(path, data)


def _check_finished_member(marker: str, member: SweepMember) -> None:
  with open(marker, encoding="utf-8") as f:
    saved = json.load(f)
  if saved.get("overrides") != json.loads(json.dumps(member.overrides)):
    raise SweepError(
        f"{marker} was written for overrides {saved.get('overrides')}, but the sweep now "
        f"gives {member.overrides}; move that workdir away to rerun the member.")


# Collecting results.


def read_metrics_csv(path: str) -> dict[tuple[str, str], dict[str, float]]:
  """Read `metrics.csv` into (image id, organ) -> {metric: value, "unit": ...}.

  Empty cells (NaN distances) become NaN.
  """
  table: dict[tuple[str, str], dict[str, Any]] = {}
  with open(path, encoding="utf-8", newline="") as f:
    for row in csv.DictReader(f):
      values: dict[str, Any] = {"unit": row.get("unit", "")}
      for key, _ in METRICS:
        text = row.get(key, "")
        values[key] = float(text) if text not in ("", None) else math.nan
      table[(row["id"], row["organ"])] = values
  return table


def paired_wilcoxon(values: Sequence[float], baseline: Sequence[float]) -> float:
  """Return the two-sided p-value of the Wilcoxon signed-rank test on paired values.

  Pairs where either value is NaN are dropped. Returns 1.0 when every
  difference is zero, and NaN when no pair remains.
  """
  from scipy import stats

  a = np.asarray(values, np.float64)
  b = np.asarray(baseline, np.float64)
  keep = np.isfinite(a) & np.isfinite(b)
  a, b = a[keep], b[keep]
  if a.size == 0:
    return math.nan
  if np.all(a == b):
    return 1.0
  return float(stats.wilcoxon(a, b).pvalue)


def _format_cell(values: np.ndarray, digits: int) -> str:
  finite = values[np.isfinite(values)]
  if finite.size == 0:
    return "n/a"
  if finite.size == 1:
    # A standard deviation needs two values.
    cell = f"{finite[0]:.{digits}f}"
  else:
    cell = f"{np.mean(finite):.{digits}f} ± {np.std(finite, ddof=1):.{digits}f}"
  missing = values.size - finite.size
  return cell + (f" ({missing} NaN)" if missing else "")


def _format_p(p: float) -> str:
  if math.isnan(p):
    return "n/a"
  return "<0.001" if p < 0.001 else f"{p:.3f}"


def collect_results(sweep_dir: str, baseline: str, output: str | None = None) -> str:
  """Build the markdown results table of a sweep and write it atomically.

  Rows are (member, organ) in sweep order. Each metric cell is mean ± sample
  standard deviation over test images; distances that are NaN (one mask
  empty) are left out and counted. The p columns are paired Wilcoxon
  signed-rank tests against `baseline` on the images both have.

  Args:
    sweep_dir: the sweep folder of `run_sweep`.
    baseline: name of the member the others are compared with.
    output: markdown file to write; default `<sweep_dir>/results.md`.

  Returns:
    The markdown text.
  """
  sweep_path = os.path.join(sweep_dir, SWEEP_FILE)
  if not os.path.exists(sweep_path):
    raise SweepError(f"{sweep_path} not found; run experiments/run_sweep.py first.")
  with open(sweep_path, encoding="utf-8") as f:
    sweep = json.load(f)
  names = [m["name"] for m in sweep["members"]]
  if baseline not in names:
    raise SweepError(f"baseline {baseline!r} is not a member of the sweep; members: {names}.")

  results, commands, unfinished = {}, {}, []
  for name in names:
    marker = os.path.join(sweep_dir, name, MEMBER_FILE)
    if not os.path.exists(marker):
      unfinished.append(name)
      continue
    with open(marker, encoding="utf-8") as f:
      info = json.load(f)
    results[name] = read_metrics_csv(os.path.join(sweep_dir, name, info["metrics_csv"]))
    commands[name] = info["command"]
  if baseline not in results:
    raise SweepError(
        f"baseline {baseline!r} has not finished; run it first, then collect the results.")

  units = sorted({v["unit"] for table in results.values() for v in table.values()})
  unit = "/".join(units) if units else "px"
  header = ["member", "organ", "images"]
  for _, label in METRICS:
    header += [f"{label} ({unit})" if label != "Dice" else label, "p"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  base = results[baseline]
  organs = list(dict.fromkeys(organ for _, organ in base))
  for name in names:
    if name not in results:
      continue
    table = results[name]
    for organ in organs:
      keys = sorted(k for k in table if k[1] == organ)
      paired = [k for k in keys if k in base]
      cells = [name, organ, str(len(keys))]
      for metric, _ in METRICS:
        values = np.array([table[k][metric] for k in keys], np.float64)
        digits = 4 if metric == "dice" else 2
        cells.append(_format_cell(values, digits))
        if name == baseline:
          cells.append("baseline")
        else:
          cells.append(_format_p(paired_wilcoxon(
              [table[k][metric] for k in paired], [base[k][metric] for k in paired])))
      lines.append("| " + " | ".join(cells) + " |")

  text = [f"Split: {sweep.get('split', 'test')}. Mean ± sample standard deviation over "
          f"images; p: paired Wilcoxon signed-rank test against `{baseline}` on the same "
          "images (two-sided; pairs with a NaN distance are dropped).", "", *lines, "",
          "Commands:", ""]
  text += [f"- `{name}`: `{commands[name]}`" for name in names if name in commands]
  if unfinished:
    text += ["", f"Not finished (left out): {', '.join(unfinished)}."]
  markdown = "\n".join(text) + "\n"
  write_text_atomic(output or os.path.join(sweep_dir, RESULTS_FILE), markdown)
  return markdown
