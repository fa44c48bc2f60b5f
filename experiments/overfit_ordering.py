"""Overfit four Montgomery images and report Chamfer and Dice of the filled graphs.

Chamfer ignores node order; Dice of the even-odd filled graph does not, so
the pair shows whether the nodes have reached the boundary in ring order.
The setup is `configs/montgomery.py` at a 64-pixel input with a smaller
model, no augmentation, batch size 4 and the schedule spread over `--steps`.

  python experiments/overfit_ordering.py /path/to/montgomery --steps 300
  python experiments/overfit_ordering.py /path/to/montgomery --steps 300 \
      --config.loss.elasticity_end=250.0 --config.loss.curvature_end=300.0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import jax
import numpy as np

from mask_hybridgnet_jax.config_utils import apply_overrides, load_config_file
from mask_hybridgnet_jax.contours import fill_polygon
from mask_hybridgnet_jax.datasets.common import read_split
from mask_hybridgnet_jax.input_pipeline import BatchIterator, device_batch
from mask_hybridgnet_jax.metrics import dice
from mask_hybridgnet_jax.train import loop
from mask_hybridgnet_jax.train.state import create_train_state
from mask_hybridgnet_jax.train.step import make_train_step

SIZE = 64


def run(montgomery_dir: str, steps: int, overrides: list[str], workdir: str) -> dict:
  folder = os.path.join(workdir, "montgomery4")
  for sub in ("images", "masks"):
    os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for name in sorted(os.listdir(os.path.join(montgomery_dir, sub)))[:4]:
      link = os.path.join(folder, sub, name)
      if not os.path.exists(link):
        os.symlink(os.path.join(montgomery_dir, sub, name), link)
  config = load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs",
                                         "montgomery.py"))
  config.dataset.manual_dir = folder
  config.dataset.image_size = SIZE
  config.model.filters = 8
  config.model.latent_dim = 16
  config.augment.enabled = False
  apply_overrides(config, overrides)
  experiment = loop.build_experiment(config, workdir)
  source = []
  for split in ("train", "validation", "test"):
    data = read_split(experiment.builder, split)
    source += [data[i] for i in range(len(data))]
  config.train.batch_size = 4
  config.train.total_examples = 4 * steps
  state = create_train_state(experiment.model, config, jax.random.PRNGKey(0))
  step = jax.jit(make_train_step(experiment.model, experiment.template, config,
                                 experiment.metadata))
  with BatchIterator(source, 4, experiment.stats["points_budget"], seed=0) as batches:
    batch = device_batch(next(batches))
  for _ in range(steps):
    state, metrics = step(state, batch)

  positions, _ = experiment.model.apply({"params": state.params}, batch["image"], train=False)
  positions = np.asarray(positions) * SIZE
  scores = [
      dice(fill_polygon(positions[b, organ_slice], (SIZE, SIZE)),
           np.asarray(batch["masks"][b, o]) > 0.5)
      for b in range(4)
      for o, organ_slice in enumerate(experiment.template.organ_slices(0))]
  return {"steps": steps, "overrides": overrides,
          "chamfer_final": float(metrics["chamfer_final"]), "dice": float(np.mean(scores))}


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  overrides = [a[len("--config."):] for a in argv if a.startswith("--config.")]
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("montgomery_dir", help="Montgomery folder with images/ and masks/")
  parser.add_argument("--steps", type=int, default=300, help="training steps")
  args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
  with tempfile.TemporaryDirectory() as workdir:
    print(json.dumps(run(args.montgomery_dir, args.steps, overrides, workdir)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
