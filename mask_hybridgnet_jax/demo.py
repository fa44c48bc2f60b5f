"""`mask-hybridgnet demo`: the whole job on built-in synthetic data.

Writes a deterministic procedural dataset of chest-like two-organ images
(no download), prepares it, trains a small model briefly, evaluates it on
the test split and predicts overlays. Finishes within minutes on 2 CPU cores.
"""

from __future__ import annotations

import logging
import os
import time

import ml_collections

from mask_hybridgnet_jax.defaults import default_config

logger = logging.getLogger(__name__)

DEMO_NUM_IMAGES = 48
DEMO_TOTAL_EXAMPLES = 4000


def demo_config(manual_dir: str, total_examples: int = DEMO_TOTAL_EXAMPLES
                ) -> ml_collections.ConfigDict:
  """Return a CPU-sized config for the synthetic demo data."""
  config = default_config()
  config.dataset.name = "mask_folder"
  config.dataset.manual_dir = manual_dir
  config.dataset.image_size = 128
  config.graph.scale_factor = 0.1
  config.model.block = "residual"
  config.model.filters = 8
  config.model.latent_dim = 32
  config.optim.learning_rate = 1e-3
  config.train.total_examples = total_examples
  config.train.batch_size = 8
  config.train.log_every_steps = 10
  config.train.eval_every_steps = 100
  config.train.checkpoint_every_steps = 100
  return config


def run_demo(output_dir: str, num_images: int | None = None,
             total_examples: int | None = None) -> dict[str, str]:
  """Run the demo into `output_dir`; return the paths of its main outputs."""
  from mask_hybridgnet_jax import evaluate as evaluate_lib
  from mask_hybridgnet_jax import visualize
  from mask_hybridgnet_jax.datasets.common import read_split
  from mask_hybridgnet_jax.datasets.synthetic import write_synthetic_dataset
  from mask_hybridgnet_jax.predict import Predictor, find_images, load_trained_model, predict_files
  from mask_hybridgnet_jax.train.loop import build_experiment, train_and_evaluate

  start = time.perf_counter()
  output_dir = os.path.abspath(output_dir)
  data_dir = os.path.join(output_dir, "synthetic_data")
  workdir = os.path.join(output_dir, "run")
  num_images = DEMO_NUM_IMAGES if num_images is None else num_images
  total_examples = DEMO_TOTAL_EXAMPLES if total_examples is None else total_examples

  print(f"[1/4] writing {num_images} synthetic chest-like images to {data_dir}")
  write_synthetic_dataset(data_dir, num_images=num_images, seed=0)
  config = demo_config(data_dir, total_examples)

  print(f"[2/4] preparing the dataset and training for {total_examples} examples in {workdir}")
  train_and_evaluate(config, workdir)

  print("[3/4] evaluating on the test split")
  trained = load_trained_model(workdir, "best")
  predictor = Predictor(trained, batch_size=8)
  experiment = build_experiment(trained.config, workdir)
  test_source = read_split(experiment.builder, "test")
  rows = evaluate_lib.evaluate_source(predictor, test_source, progress=False)
  results = evaluate_lib.write_results(rows, os.path.join(output_dir, "evaluation"))
  print(evaluate_lib.format_summary(rows))

  print("[4/4] predicting landmarks, masks and overlays for the test images")
  test_ids = {example["id"].decode() if isinstance(example["id"], bytes) else str(example["id"])
              for example in (test_source[i] for i in range(len(test_source)))}
  images = [p for p in find_images([os.path.join(data_dir, "images")])
            if os.path.splitext(os.path.basename(p))[0] in test_ids]
  predictions_dir = os.path.join(output_dir, "predictions")
  predict_files(predictor, images, predictions_dir)
  curves = visualize.plot_training_curves(
      os.path.join(workdir, "metrics.jsonl"), os.path.join(output_dir, "training_curves.png"))

  minutes = (time.perf_counter() - start) / 60
  print(f"\ndemo finished in {minutes:.1f} min. Outputs:")
  print(f"  predictions (JSON landmarks, label masks, overlays): {predictions_dir}")
  print(f"  per-image metrics: {results['csv']}")
  print(f"  training curves: {curves}")
  print(f"  checkpoints and metrics.jsonl: {workdir}")
  return {"predictions": predictions_dir, "metrics": results["csv"], "curves": curves,
          "workdir": workdir}
