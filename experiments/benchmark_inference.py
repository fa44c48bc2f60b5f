"""Inference speed: images per second, compile time, memory, encoder share.

For each batch size it compiles the prediction function of `predict.py`
(latent mean, no sampling) and the encoder's forward pass alone, and times
both in turn, one call of each per round, on random network inputs. Per
image, `model / encoder` is the cost of the graph decoder on top of the
encoder. Weights are
freshly initialised: the speed does not depend on their values. Host work
(image reading, resizing, writing PNG and JSON) is not included.

  python experiments/benchmark_inference.py --config configs/montgomery.py \
      --batch_sizes 1 16 --repeats 5 --output /tmp/inference.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench_common import environment, interleaved_medians, temp_mib, write_json


def run(config_path: str, batch_sizes: list[int], repeats: int, image_size: int | None) -> dict:
  from mask_hybridgnet_jax.config_utils import load_config_file
  from mask_hybridgnet_jax.models.encoder import Encoder
  from mask_hybridgnet_jax.models.hybridgnet import build_model
  from mask_hybridgnet_jax.organs import DatasetMetadata, Organ
  from mask_hybridgnet_jax.topology import GraphTemplate
  from mask_hybridgnet_jax.train.state import create_train_state

  config = load_config_file(config_path)
  if image_size:
    config.dataset.image_size = image_size
  size = config.dataset.image_size
  metadata = DatasetMetadata(organs=(Organ("right_lung", 1), Organ("left_lung", 2)))
  # Mean boundary lengths of the Montgomery training split at 512 x 512.
  template = GraphTemplate.from_boundary_lengths(
      metadata, {"right_lung": 878.0, "left_lung": 866.0},
      scale=config.graph.scale_factor, num_levels=config.graph.num_levels)
  model = build_model(config.model, template)
  state = create_train_state(model, config, jax.random.PRNGKey(0))
  variables = {"params": state.params}
  encoder = Encoder(block=model.block, filters=model.filters, latent_dim=model.latent_dim,
                    norm=model.norm, dtype=model.dtype, log_var_clip=model.log_var_clip)
  encoder_variables = {"params": state.params["encoder"]}

  def predict(variables, images):
    positions, _ = model.apply(variables, images, train=False)
    return positions

  def encode(variables, images):
    mu, _, features = encoder.apply(variables, images, train=False)
    return mu, features

  rows = []
  for batch_size in batch_sizes:
    images = jnp.asarray(
        np.random.default_rng(batch_size).random((batch_size, size, size, 1), np.float32))
    start = time.perf_counter()
    compiled = jax.jit(predict).lower(variables, images).compile()
    compile_seconds = time.perf_counter() - start
    encoder_compiled = jax.jit(encode).lower(encoder_variables, images).compile()
    medians = interleaved_medians({
        "model": lambda: compiled(variables, images),
        "encoder": lambda: encoder_compiled(encoder_variables, images),
    }, repeats)
    model_seconds, encoder_seconds = medians["model"], medians["encoder"]
    row = {
        "batch_size": batch_size,
        "compile_seconds": round(compile_seconds, 2),
        "images_per_second": round(batch_size / model_seconds, 2),
        "seconds_per_image": round(model_seconds / batch_size, 4),
        "encoder_seconds_per_image": round(encoder_seconds / batch_size, 4),
        "model_over_encoder": round(model_seconds / encoder_seconds, 2),
        "compiled_temp_mib": temp_mib(compiled, 1),
    }
    print(json.dumps(row), flush=True)
    rows.append(row)
  return {
      "config": config_path,
      "image_size": size,
      "block": config.model.block,
      "rows": rows,
      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      **environment(),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/montgomery.py")
  parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 16])
  parser.add_argument("--image_size", type=int, default=None,
                      help="network input size S; default: the config's")
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per batch size")
  parser.add_argument("--output", default=None, help="JSON file for the results")
  args = parser.parse_args(argv)
  result = run(args.config, args.batch_sizes, args.repeats, args.image_size)
  if args.output:
    write_json(args.output, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())
