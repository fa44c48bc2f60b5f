"""Throughput of the host input pipeline, against what the train step consumes.

Reads the train split of a prepared dataset with `BatchIterator` (array_record
reads, decoding, padding, collation; prefetch thread on) and reports examples
per second per batch size. Augmentation is not part of it: it runs on device
inside the jitted train step.

Without `--manual_dir` it writes the procedural two-lung dataset
(`datasets/synthetic.py`) at 512 x 512 into `--work_dir` and prepares it at
`--image_size`; the pipeline's cost depends on the array sizes, not on the
image content. With `--train_json` (the output of benchmark_train.py) it also
prints the pipeline's rate over the step's rate.

  python experiments/benchmark_input.py --image_size 256 --batch_sizes 1 4 \
      --seconds 10 --train_json /tmp/benchmark_train.json --output /tmp/input.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench_common import machine, write_json


def _examples_per_second(source, batch_size: int, points_budget: int, seconds: float,
                         prefetch: int) -> tuple[float, int]:
  from mask_hybridgnet_jax.input_pipeline import BatchIterator

  examples = 0
  with BatchIterator(source, batch_size, points_budget, seed=0, prefetch=prefetch) as batches:
    next(batches)  # opens the files and starts the thread
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
      next(batches)
      examples += batch_size
    elapsed = time.perf_counter() - start
  return examples / elapsed, examples


def run(args) -> dict:
  from mask_hybridgnet_jax.datasets.common import dataset_metadata, load_builder, read_split

  manual_dir, name = args.manual_dir, args.dataset
  if manual_dir is None:
    from mask_hybridgnet_jax.datasets.synthetic import write_synthetic_dataset

    manual_dir = str(write_synthetic_dataset(
        os.path.join(args.work_dir, "synthetic"), num_images=args.num_images, size=512))
    name = "mask_folder"
  builder = load_builder(name, manual_dir=manual_dir,
                         data_dir=os.path.join(args.work_dir, "prepared"),
                         image_size=args.image_size)
  _, stats = dataset_metadata(builder)
  source = read_split(builder, "train")
  train_rate = None
  if args.train_json:
    with open(args.train_json, encoding="utf-8") as f:
      train = json.load(f)
    train_rate = train["examples_per_second_raster_off"]

  rows = []
  for batch_size in args.batch_sizes:
    rate, examples = _examples_per_second(
        source, batch_size, stats["points_budget"], args.seconds, args.prefetch)
    row = {"batch_size": batch_size, "examples_per_second": round(rate, 1),
           "examples_read": examples}
    if train_rate:
      row["pipeline_over_train_step"] = round(rate / train_rate, 1)
    print(json.dumps(row), flush=True)
    rows.append(row)
  return {
      "dataset": name,
      "image_size": args.image_size,
      "points_budget": stats["points_budget"],
      "train_examples": len(source),
      "prefetch": args.prefetch,
      "train_step_examples_per_second": train_rate,
      "rows": rows,
      "machine": machine(),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dataset", default="mask_folder",
                      help="builder name for --manual_dir (mask_folder or montgomery)")
  parser.add_argument("--manual_dir", default=None,
                      help="dataset source folder; default: a synthetic dataset")
  parser.add_argument("--work_dir", default="/tmp/benchmark_input",
                      help="folder for the synthetic and prepared data")
  parser.add_argument("--num_images", type=int, default=40,
                      help="synthetic images to write (without --manual_dir)")
  parser.add_argument("--image_size", type=int, default=256, help="network input size S")
  parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4])
  parser.add_argument("--seconds", type=float, default=10.0,
                      help="reading time per batch size, in seconds")
  parser.add_argument("--prefetch", type=int, default=2, help="batches prepared ahead")
  parser.add_argument("--train_json", default=None,
                      help="benchmark_train.py output to compare against")
  parser.add_argument("--output", default=None, help="JSON file for the results")
  args = parser.parse_args(argv)
  result = run(args)
  if args.output:
    write_json(args.output, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())
