"""The training loop: `train_and_evaluate(config, workdir)`.

The workdir contains everything a run needs to resume and be inspected:

  config.json      the full config (a resumed run must match it)
  topology.json    the graph template (organs, node counts, levels)
  metrics.jsonl    one JSON object per logging or evaluation step
  checkpoints/     the latest `train.keep_checkpoints` Orbax checkpoints
  best/            the checkpoint with the lowest validation Chamfer loss
  data/            the prepared dataset, unless `dataset.data_dir` is set

Rerunning the same command after a crash or a kill continues from the newest
checkpoint: step, optimizer state, PRNG key and position in the data order
are restored, and metrics lines logged after that checkpoint are dropped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from mask_hybridgnet_jax import config_utils
from mask_hybridgnet_jax.contours import fill_polygon
from mask_hybridgnet_jax.datasets.common import dataset_metadata, load_builder, read_split
from mask_hybridgnet_jax.input_pipeline import BatchIterator, device_batch, iterate_eval_batches
from mask_hybridgnet_jax.io.atomic import write_text_atomic
from mask_hybridgnet_jax.mean_shape import mean_contour_shape, unified_mean_shape
from mask_hybridgnet_jax.io.images import read_label_map
from mask_hybridgnet_jax.metrics import dice
from mask_hybridgnet_jax.models.hybridgnet import build_model
from mask_hybridgnet_jax.organs import DatasetMetadata
from mask_hybridgnet_jax.topology import GraphTemplate
from mask_hybridgnet_jax.train import checkpoint as checkpoint_lib
from mask_hybridgnet_jax.train import sharding
from mask_hybridgnet_jax.train.state import create_train_state
from mask_hybridgnet_jax.train.step import (
    INPUT_KINDS, input_kind_of, make_eval_step, make_train_step)
from mask_hybridgnet_jax.unified_graph import DEFAULT_MERGE_DISTANCE_PX, build_unified_template

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
TOPOLOGY_FILE = "topology.json"
METRICS_FILE = "metrics.jsonl"
DATA_DIR = "data"


class NonFiniteLossError(FloatingPointError):
  """The loss turned NaN or Inf; the message names the step."""


class WorkdirConfigMismatchError(ValueError):
  """The workdir belongs to a run with another config."""


@dataclasses.dataclass
class Experiment:
  """Everything built from a config before training starts."""

  config: ml_collections.ConfigDict
  builder: Any
  metadata: DatasetMetadata
  stats: dict[str, Any]
  template: GraphTemplate
  model: Any


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raise ConfigError naming the key for missing or out-of-range settings."""
  if not config.dataset.manual_dir:
    raise config_utils.ConfigError(
        "missing required config key dataset.manual_dir: set "
        "--config.dataset.manual_dir=/path/to/dataset/folder")
  checks = [
      ("dataset.image_size", config.dataset.image_size >= 32, "at least 32"),
      ("train.batch_size", config.train.batch_size >= 1, "at least 1"),
      ("train.total_examples", config.train.total_examples >= config.train.batch_size,
       "at least train.batch_size"),
      ("train.log_every_steps", config.train.log_every_steps >= 1, "at least 1"),
      ("train.eval_every_steps", config.train.eval_every_steps >= 1, "at least 1"),
      ("train.checkpoint_every_steps", config.train.checkpoint_every_steps >= 1, "at least 1"),
      ("train.keep_checkpoints", config.train.keep_checkpoints >= 1, "at least 1"),
      ("graph.num_levels", 2 <= config.graph.num_levels <= 4, "2, 3 or 4"),
  ]
  for key, ok, expected in checks:
    if not ok:
      raise config_utils.ConfigError(f"config key {key} must be {expected}")
  if input_kind_of(config) not in INPUT_KINDS:
    raise config_utils.ConfigError(
        f"config key input must be one of {list(INPUT_KINDS)}, got {config.input!r}")
  if config.train.batch_size % jax.device_count():
    raise config_utils.ConfigError(
        f"train.batch_size={config.train.batch_size} must be a multiple of the "
        f"{jax.device_count()} devices, which each take an equal share")


def data_dir_for(config: ml_collections.ConfigDict, workdir: str) -> str:
  return config.dataset.data_dir or os.path.join(workdir, DATA_DIR)


def load_config_builder(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """Return the dataset builder of a run's config, preparing the data if needed.

  Training, evaluation and the analysis commands all call this, so that they
  read the same prepared variant of the dataset.
  """
  return load_builder(
      config.dataset.name,
      manual_dir=config.dataset.manual_dir,
      data_dir=data_dir_for(config, os.path.abspath(workdir)),
      image_size=config.dataset.image_size,
      skip_degenerate=config.dataset.skip_degenerate,
      split_seed=config.dataset.split_seed,
      builder_options=dict(config.dataset.get("builder_options", None) or {}),
  )


def build_experiment(config: ml_collections.ConfigDict, workdir: str) -> Experiment:
  """Prepare the dataset (if needed), the graph template and the model."""
  builder = load_config_builder(config, workdir)
  metadata, stats = dataset_metadata(builder)
  if not stats.get("has_images", True) and config.get("input", "image") != "masks":
    raise config_utils.ConfigError(
        f"dataset {config.dataset.name!r} has no images (its stored images are zeros), so an "
        "image model cannot learn from it. Train a mask-input model on it: set "
        'config.input = "masks" and model.input_channels to the number of organs '
        "(see configs/jsrt_mask2graph.py).")
  template = GraphTemplate.from_boundary_lengths(
      metadata.organs,
      stats["mean_boundary_lengths"],
      scale=config.graph.scale_factor,
      num_levels=config.graph.num_levels,
      overrides=dict(config.graph.node_overrides) or None,
  )
  representation = config.graph.get("representation", "independent")
  unified_positions = None
  if representation == "unified":
    template, unified_positions = _unified_template(config, builder, metadata, template)
  elif representation != "independent":
    raise config_utils.ConfigError(
        f"config key graph.representation is {representation!r}; use \"independent\" or "
        "\"unified\".")
  mean_shape = None
  if config.model.get("shape_prior", False):
    mean_shape = mean_contour_shape(
        read_split(builder, "train"), metadata.organ_names, template.node_counts)
    if unified_positions is not None:
      mean_shape = unified_mean_shape(template.rings[0], unified_positions, mean_shape)
  check_input_channels(config, len(metadata.organs))
  model = build_model(config.model, template, mean_shape=mean_shape)
  return Experiment(config, builder, metadata, stats, template, model)


def _unified_template(config: ml_collections.ConfigDict, builder: Any,
                      metadata: DatasetMetadata,
                      independent: GraphTemplate) -> tuple[GraphTemplate, np.ndarray]:
  """Build the unified graph from `graph.template_mask`, or from a training example.

  Without a template mask file, the first training example that contains
  every organ serves, at its original resolution. The node counts are those
  of the independent template. Returns the template and its level-0 node
  positions in pixels of the template mask.
  """
  path = config.graph.get("template_mask", "")
  if path:
    label_map = read_label_map(path)
    source = path
  else:
    train = read_split(builder, "train")
    label_map, source = None, ""
    for index in range(len(train)):
      example = train[index]
      if np.all(example["present"]):
        masks = np.asarray(example["masks_original"]) > 0
        label_map = np.zeros(masks.shape[1:], np.int64)
        for organ, mask in zip(metadata.organs, masks):
          label_map[mask] = organ.label
        example_id = example["id"]
        source = example_id.decode() if isinstance(example_id, bytes) else str(example_id)
        break
    if label_map is None:
      raise config_utils.ConfigError(
          "no training example contains every organ, so none can serve as the template "
          "mask of the unified graph; set graph.template_mask to a label-map file.")
  return build_unified_template(
      label_map, metadata.organs, independent.node_counts, config.graph.num_levels,
      merge_distance_px=config.graph.get("merge_distance_px", DEFAULT_MERGE_DISTANCE_PX),
      source=f"template mask {source}")


def check_input_channels(config: ml_collections.ConfigDict, num_organs: int) -> None:
  """Raise ConfigError unless model.input_channels matches what `config.input` feeds."""
  expected = num_organs if input_kind_of(config) == "masks" else 1
  if config.model.input_channels != expected:
    raise config_utils.ConfigError(
        f"config key model.input_channels is {config.model.input_channels}, but input="
        f"{input_kind_of(config)!r} feeds {expected} channel(s) for {num_organs} organ(s); "
        f"set --config.model.input_channels={expected}")


def _prepare_workdir(config: ml_collections.ConfigDict, template: GraphTemplate,
                     workdir: str) -> None:
  """Write config.json and topology.json, or check them against an earlier run."""
  config_path = os.path.join(workdir, CONFIG_FILE)
  config_json = config_utils.config_to_json(config)
  if os.path.exists(config_path):
    with open(config_path, encoding="utf-8") as f:
      saved = json.load(f)
    differences = _dict_differences(saved, config.to_dict())
    if differences:
      raise WorkdirConfigMismatchError(
          f"{workdir} contains a run with another config; differing keys: "
          f"{', '.join(differences)}. Rerun with the same config to resume, "
          "or choose a new --workdir.")
  else:
    write_text_atomic(config_path, config_json)
  topology_path = os.path.join(workdir, TOPOLOGY_FILE)
  if os.path.exists(topology_path):
    differences = GraphTemplate.load(topology_path).differences(template)
    if differences:
      raise WorkdirConfigMismatchError(
          f"{topology_path} differs from the template built now: {'; '.join(differences)}")
  else:
    template.save(topology_path)


def _dict_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
      out.extend(_dict_differences(a.get(key), b.get(key), f"{prefix}{key}."))
    return out
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    a, b = list(a), list(b)
  return [] if a == b else [prefix.rstrip(".")]


class MetricsWriter:
  """Appends one JSON line per record to metrics.jsonl, flushed and synced."""

  def __init__(self, path: str, resume_step: int):
    self.path = path
    self._drop_after(resume_step)

  def _drop_after(self, step: int) -> None:
    """Remove lines logged after the checkpoint the run resumes from."""
    if not os.path.exists(self.path):
      return
    kept = []
    with open(self.path, encoding="utf-8") as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut short by a kill
        if record.get("step", 0) <= step:
          kept.append(json.dumps(record))
    write_text_atomic(self.path, "".join(k + "\n" for k in kept))

  def write(self, record: dict[str, Any]) -> None:
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")
      f.flush()
      os.fsync(f.fileno())


def evaluate_split(experiment: Experiment, variables, split: str, batch_size: int,
                   eval_step=None) -> dict[str, float]:
  """Validation Chamfer (normalised units) and Dice at network resolution."""
  source = read_split(experiment.builder, split)
  if eval_step is None:
    eval_step = jax.jit(make_eval_step(
        experiment.model, experiment.template, input_kind_of(experiment.config)))
  size = experiment.config.dataset.image_size
  chamfer_sum, count = 0.0, 0.0
  dices = {name: [] for name in experiment.template.organ_names}
  for batch in iterate_eval_batches(source, batch_size, experiment.stats["points_budget"],
                                    experiment.template.organ_names):
    out = jax.device_get(eval_step(variables, device_batch(batch)))
    chamfer_sum += float(out["chamfer_sum"])
    count += float(out["count"])
    positions = np.asarray(out["positions"]) * size
    for b in np.flatnonzero(batch["valid"]):
      for o, (name, organ_slice) in enumerate(
          zip(experiment.template.organ_names, experiment.template.organ_indices(0))):
        if not batch["present"][b, o]:
          continue
        predicted = fill_polygon(positions[b, organ_slice], (size, size))
        dices[name].append(dice(predicted, batch["masks"][b, o] > 0.5))
  result = {"val_loss": chamfer_sum / max(count, 1.0), "val_examples": count}
  for name, values in dices.items():
    result[f"val_dice/{name}"] = float(np.mean(values)) if values else float("nan")
  return result


def _to_float(metrics: dict[str, Any]) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items() if np.ndim(v) == 0}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Train (or resume) a model in `workdir` and return the last validation metrics."""
  validate_config(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  experiment = build_experiment(config, workdir)
  template, stats = experiment.template, experiment.stats
  _prepare_workdir(config, template, workdir)
  logger.info("graph template: %s", json.dumps(template.to_dict()))

  train_source = read_split(experiment.builder, "train")
  if len(train_source) == 0:
    raise ValueError(f"the train split of {config.dataset.manual_dir} is empty")

  rng = jax.random.PRNGKey(config.train.seed)
  state = create_train_state(experiment.model, config, rng)
  meta = checkpoint_lib.build_meta(
      config.to_dict(), template.to_dict(), experiment.metadata.to_dict(), state.params)
  checkpointer = checkpoint_lib.Checkpointer(workdir, config.train.keep_checkpoints)
  restored = checkpointer.restore_latest(state, meta)
  if restored is not None:
    state = restored
  start_step = int(jax.device_get(state.step))

  batch_size = config.train.batch_size
  total_steps = math.ceil(config.train.total_examples / batch_size)
  mesh = sharding.make_mesh()
  state = sharding.replicate(state, mesh)
  train_step = jax.jit(
      make_train_step(experiment.model, template, config, experiment.metadata),
      donate_argnums=(0,))
  eval_step = jax.jit(make_eval_step(experiment.model, template, input_kind_of(config)))
  writer = MetricsWriter(os.path.join(workdir, METRICS_FILE), start_step)
  if start_step >= total_steps:
    logger.info("training already finished at step %d", start_step)
    checkpointer.close()
    return {}
  if start_step:
    logger.info("resuming from step %d of %d", start_step, total_steps)
  logger.info("compiling the train step; the first step takes longer")

  # Every process reads the whole global batch stream (same seed, same order)
  # and shard_batch keeps the rows of its own devices. That reads B examples
  # per host and step instead of B / hosts, which is cheap next to the step.
  batches = BatchIterator(
      train_source, batch_size=batch_size, points_budget=stats["points_budget"],
      seed=config.train.seed, start_example=start_step * batch_size,
      organ_names=template.organ_names)
  last_eval: dict[str, float] = {}
  window_start, window_examples = time.perf_counter(), 0
  progress = tqdm.tqdm(total=total_steps, initial=start_step, unit="step",
                       dynamic_ncols=True, desc="train")
  try:
    for step in range(start_step, total_steps):
      batch = next(batches)
      compile_start = time.perf_counter()
      state, metrics = train_step(state, sharding.shard_batch(device_batch(batch), mesh))
      if step == start_step:
        jax.block_until_ready(state)
        compile_seconds = time.perf_counter() - compile_start
        logger.info("first train step (compile and run): %.1f s", compile_seconds)
        writer.write({"step": step + 1, "compile_seconds": compile_seconds})
      window_examples += batch_size
      done = step + 1

      if done % config.train.log_every_steps == 0 or done == total_steps:
        scalars = _to_float(metrics)
        if config.train.stop_on_nonfinite and not math.isfinite(scalars["loss"]):
          raise NonFiniteLossError(
              f"loss is {scalars['loss']} at step {done}; metrics: {scalars}. "
              f"The last good checkpoint is in {workdir}/{checkpoint_lib.LATEST_DIR}.")
        elapsed = time.perf_counter() - window_start
        scalars["examples_per_second"] = window_examples / max(elapsed, 1e-9)
        scalars["examples_seen"] = done * batch_size
        writer.write({"step": done, **scalars})
        progress.set_postfix(loss=f"{scalars['loss']:.4g}",
                             ex_s=f"{scalars['examples_per_second']:.1f}")
        window_start, window_examples = time.perf_counter(), 0

      evaluate_now = done % config.train.eval_every_steps == 0 or done == total_steps
      checkpoint_now = (done % config.train.checkpoint_every_steps == 0 or evaluate_now)
      val_loss = None
      if evaluate_now:
        variables = {"params": state.params}
        if state.batch_stats:
          variables["batch_stats"] = state.batch_stats
        last_eval = evaluate_split(experiment, variables, "validation",
                                   config.train.eval_batch_size, eval_step)
        val_loss = last_eval["val_loss"]
        writer.write({"step": done, **last_eval})
        logger.info("step %d: %s", done, json.dumps(last_eval))
      if checkpoint_now:
        checkpointer.save(state, meta, val_loss=val_loss)
      progress.update(1)
  finally:
    progress.close()
    batches.close()
    checkpointer.close()
  return last_eval
