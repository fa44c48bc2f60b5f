"""Orbax checkpoints: the latest few, plus the best by validation loss.

Each checkpoint contains two items: `state` (step, parameters, normalisation
statistics, optimizer state and PRNG key) and `meta` (JSON: the config, the
graph template, the dataset metadata and every parameter shape). Restoring
first compares `meta` with the current run and raises a CheckpointMismatchError
listing every difference, so a checkpoint never restores partially into a
model of another shape.

Orbax writes each checkpoint into a temporary folder and renames it when
complete, so a process killed mid-write leaves the previous checkpoint
restorable. `Checkpointer` deletes the temporary folders such a kill leaves
behind when the next training run opens the workdir.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from mask_hybridgnet_jax.topology import GraphTemplate
from mask_hybridgnet_jax.train.state import TrainState, parameter_shapes

logger = logging.getLogger(__name__)

LATEST_DIR = "checkpoints"
BEST_DIR = "best"
# Orbax (0.12.8) writes step N into "N.orbax-checkpoint-tmp" and renames it to
# "N" when the save is complete.
UNFINISHED_SAVE_MARKER = ".orbax-checkpoint-tmp"


class CheckpointMismatchError(ValueError):
  """A checkpoint does not fit the current config; the message lists why."""


def _state_tree(state: TrainState) -> dict[str, Any]:
  tree = {
      "step": state.step,
      "params": state.params,
      "opt_state": state.opt_state,
      "rng": state.rng,
  }
  # Orbax cannot store an empty subtree; batch_stats is empty unless the
  # encoder uses batch normalisation.
  if state.batch_stats:
    tree["batch_stats"] = state.batch_stats
  return tree


def _with_tree(state: TrainState, tree: dict[str, Any]) -> TrainState:
  return state.replace(
      step=tree["step"],
      params=tree["params"],
      opt_state=tree["opt_state"],
      rng=tree["rng"],
      batch_stats=tree.get("batch_stats", state.batch_stats),
  )


class Checkpointer:
  """Saves and restores train states under `<workdir>/checkpoints` and `<workdir>/best`."""

  def __init__(self, workdir: str, keep: int):
    workdir = os.path.abspath(workdir)
    if jax.process_index() == 0:
      for name in (LATEST_DIR, BEST_DIR):
        remove_unfinished_saves(os.path.join(workdir, name))
    self.latest = ocp.CheckpointManager(
        os.path.join(workdir, LATEST_DIR),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
    )
    self.best = ocp.CheckpointManager(
        os.path.join(workdir, BEST_DIR),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda m: m["val_loss"], best_mode="min"),
    )

  def save(self, state: TrainState, meta: dict[str, Any], val_loss: float | None = None) -> None:
    """Save `state` as the latest checkpoint, and as the best when `val_loss` improves."""
    step = int(jax.device_get(state.step))
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(_state_tree(state)), meta=ocp.args.JsonSave(meta))
    if self.latest.latest_step() != step:
      self.latest.save(step, args=args)
    if val_loss is not None and self.best.latest_step() != step:
      args = ocp.args.Composite(
          state=ocp.args.StandardSave(_state_tree(state)), meta=ocp.args.JsonSave(meta))
      self.best.save(step, args=args, metrics={"val_loss": float(val_loss)})
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore_latest(self, target: TrainState, meta: dict[str, Any]) -> TrainState | None:
    """Restore the newest checkpoint into `target`'s structure, or None if there is none."""
    step = self.latest.latest_step()
    if step is None:
      return None
    return restore(self.latest, step, target, meta)

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def remove_unfinished_saves(directory: str) -> list[str]:
  """Delete the temporary folders of saves that were killed before completing.

  Orbax replaces such a folder only when the same step is saved again, so
  without this a kill between saves leaves it on disk for good.

  Returns:
    The names of the deleted folders.
  """
  if not os.path.isdir(directory):
    return []
  removed = []
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    if UNFINISHED_SAVE_MARKER in name and os.path.isdir(path):
      logger.warning("deleting %s, left by a checkpoint save that did not complete", path)
      shutil.rmtree(path)
      removed.append(name)
  return removed


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  return restored["meta"]


def compare_meta(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """Human-readable differences that make a checkpoint unusable for the current run."""
  problems = [
      f"graph {difference}" for difference in GraphTemplate.from_dict(saved["template"]).differences(
          GraphTemplate.from_dict(current["template"]),
          this_name="the checkpoint", other_name="the config")]
  saved_shapes, current_shapes = saved.get("param_shapes", {}), current.get("param_shapes", {})
  for path in sorted(set(saved_shapes) | set(current_shapes)):
    before, after = saved_shapes.get(path), current_shapes.get(path)
    if before != after:
      problems.append(f"parameter {path}: checkpoint {before} vs config {after}")
  return problems


def restore(
    manager: ocp.CheckpointManager, step: int, target: TrainState, meta: dict[str, Any]
) -> TrainState:
  """Restore checkpoint `step` into `target`, refusing any structural mismatch."""
  saved_meta = read_meta(manager, step)
  problems = compare_meta(saved_meta, meta)
  if problems:
    listed = "\n  ".join(problems)
    raise CheckpointMismatchError(
        f"checkpoint {manager.directory}/{step} does not match the current config "
        f"({len(problems)} difference(s)):\n  {listed}\n"
        "Use the config the checkpoint was trained with, or a new workdir.")
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_tree(target))
  restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  logger.info("restored checkpoint %s/%d", manager.directory, step)
  return _with_tree(target, restored["state"])


def build_meta(config_dict: dict[str, Any], template_dict: dict[str, Any],
               metadata_dict: dict[str, Any], params: Any) -> dict[str, Any]:
  return {
      "config": config_dict,
      "template": template_dict,
      "dataset_metadata": metadata_dict,
      "param_shapes": parameter_shapes(params),
  }
