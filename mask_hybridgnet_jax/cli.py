"""The `mask-hybridgnet` command line.

  mask-hybridgnet demo
  mask-hybridgnet prepare --dataset montgomery --manual_dir DIR --data_dir OUT
  mask-hybridgnet train --config configs/montgomery.py --workdir RUN \
      --config.dataset.manual_dir=DIR
  mask-hybridgnet predict --workdir RUN --output_dir OUT IMAGE_OR_FOLDER ...
  mask-hybridgnet evaluate --workdir RUN --split test
  mask-hybridgnet correspondence --predictions OUT --landmarks DIR --workdir RUN \
      --output_dir CORR

Analysis commands (shape-analysis, atlas, correspondence, head-circumference,
reconstruct, track, mask2graph) are described in docs/analysis.md.

Config overrides take the form `--config.key=value` (e.g.
`--config.train.batch_size=8`); an unknown key is an error naming the
nearest valid one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

logger = logging.getLogger("mask_hybridgnet_jax")


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      "--config", default=None,
      help="config file defining get_config() (default: the built-in reference config); "
           "override any key with --config.KEY=VALUE")


def _load_config(args, overrides: Sequence[str]):
  from mask_hybridgnet_jax import config_utils
  from mask_hybridgnet_jax.defaults import default_config

  config = config_utils.load_config_file(args.config) if args.config else default_config()
  config_utils.apply_overrides(config, overrides)
  return config


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separate `--config.key=value` items from the other arguments."""
  overrides, rest = [], []
  items = list(argv)
  i = 0
  while i < len(items):
    item = items[i]
    if item.startswith("--config."):
      body = item[len("--config."):]
      if "=" not in body and i + 1 < len(items):
        body = f"{body}={items[i + 1]}"
        i += 1
      overrides.append(body)
    else:
      rest.append(item)
    i += 1
  return overrides, rest


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="mask-hybridgnet",
      description="Graph-based anatomical segmentation trained from pixel masks.")
  parser.add_argument("--verbose", action="store_true", help="log debug messages")
  commands = parser.add_subparsers(dest="command", required=True)

  demo = commands.add_parser(
      "demo", help="prepare, train, predict and evaluate on built-in synthetic data")
  demo.add_argument("--output_dir", default="mask_hybridgnet_demo",
                    help="folder for the data, the run and the outputs (default: %(default)s)")
  demo.add_argument("--num_images", type=int, default=None,
                    help="number of synthetic images (default: the demo's built-in value)")
  demo.add_argument("--total_examples", type=int, default=None,
                    help="training examples to draw (default: the demo's built-in value)")

  datasets = commands.add_parser("datasets", help="list the dataset builders")
  del datasets

  prepare = commands.add_parser("prepare", help="build a dataset from its source folder")
  prepare.add_argument("--dataset", required=True, help="builder name (see `datasets`)")
  prepare.add_argument("--manual_dir", required=True, help="folder with the source files")
  prepare.add_argument("--data_dir", required=True, help="where the prepared files go")
  prepare.add_argument("--image_size", type=int, default=256,
                       help="network input size S in pixels (default: %(default)s)")
  prepare.add_argument("--skip_degenerate", action="store_true",
                       help="treat degenerate organ masks as absent instead of failing")
  prepare.add_argument("--split_seed", type=int, default=0,
                       help="seed of the patient-level train/validation/test split")
  prepare.add_argument("--overwrite", action="store_true",
                       help="prepare again even if data_dir already contains this dataset")
  prepare.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="dataset-specific builder option, e.g. mask_size=512 for "
                            "jsrt_contours (repeatable)")
  prepare.add_argument("--scale_factor", type=float, default=None,
                       help="graph nodes per boundary pixel for the reported node counts "
                            "(default: the dataset's, 0.05 for chest X-ray, else 0.1)")
  prepare.add_argument("--num_levels", type=int, default=3,
                       help="graph resolution levels for the reported node counts "
                            "(default: %(default)s)")
  prepare.add_argument("--json", action="store_true",
                       help="print the organs and all stored statistics as JSON")

  train = commands.add_parser("train", help="train a model (resumes if the workdir has one)")
  train.add_argument("--workdir", required=True, help="folder for checkpoints and logs")
  train.add_argument("--distributed", action="store_true",
                     help="call jax.distributed.initialize() first: run the same command on "
                          "every host of a multi-host job (TPU pod, SLURM, or with the "
                          "JAX coordinator environment variables set)")
  _add_config_arguments(train)

  predict = commands.add_parser("predict", help="predict graphs for images")
  predict.add_argument("inputs", nargs="+", help="image files or folders of images")
  predict.add_argument("--workdir", required=True, help="training workdir to load")
  predict.add_argument("--output_dir", required=True, help="folder for the outputs")
  predict.add_argument("--checkpoint", choices=("best", "latest"), default="best")
  predict.add_argument("--batch_size", type=int, default=8, help="images per batch")
  predict.add_argument("--num_samples", "--samples", type=int, default=0,
                       help="latent samples for per-node uncertainty (0: none)")
  predict.add_argument("--no_overlay", action="store_true", help="skip the overlay PNGs")
  predict.add_argument(
      "--write_pixel_masks", "--write-pixel-masks", action="store_true",
      help="also write <stem>_pixel_mask.png, the pixel decoder's label map (dual models)")

  evaluate = commands.add_parser(
      "evaluate", help="per-organ Dice, Hausdorff and ASSD on a dataset split or folders")
  evaluate.add_argument("--workdir", help="training workdir (evaluate its dataset split)")
  evaluate.add_argument("--split", default="test", help="split name (default: %(default)s)")
  evaluate.add_argument("--checkpoint", choices=("best", "latest"), default="best")
  evaluate.add_argument("--predictions", help="folder of predicted label maps (<stem>_mask.png)")
  evaluate.add_argument("--masks", help="folder of ground-truth label maps")
  evaluate.add_argument("--metadata", help="metadata.json naming organs and labels (folders mode)")
  evaluate.add_argument("--spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"),
                        help="pixel spacing for the folders mode; distances in pixels without it")
  evaluate.add_argument("--output_dir", help="where metrics.csv, summary.md and dice_boxplot.png go "
                        "(default: <workdir>/eval_<split>, or the predictions folder)")
  evaluate.add_argument("--batch_size", type=int, default=8, help="images per batch")

  from mask_hybridgnet_jax.analysis import commands as analysis_commands
  analysis_commands.add_parsers(commands)
  return parser


def _parse_builder_options(items: Sequence[str]) -> dict[str, object]:
  """Parse `KEY=VALUE` items; values that read as integers or floats become numbers."""
  options: dict[str, object] = {}
  for item in items:
    key, separator, text = item.partition("=")
    if not separator or not key:
      raise ValueError(f"--option {item!r}: expected KEY=VALUE, e.g. mask_size=512.")
    value: object = text
    for parse in (int, float):
      try:
        value = parse(text)
        break
      except ValueError:
        continue
    options[key] = value
  return options


def _run_prepare(args) -> int:
  from mask_hybridgnet_jax.datasets.common import dataset_metadata, load_builder, prepare
  from mask_hybridgnet_jax.datasets.report import format_report

  options = _parse_builder_options(args.option)
  if args.overwrite:
    builder = prepare(
        args.dataset, manual_dir=args.manual_dir, data_dir=args.data_dir,
        image_size=args.image_size, skip_degenerate=args.skip_degenerate,
        split_seed=args.split_seed, overwrite=True, builder_options=options)
  else:
    builder = load_builder(
        args.dataset, manual_dir=args.manual_dir, data_dir=args.data_dir,
        image_size=args.image_size, skip_degenerate=args.skip_degenerate,
        split_seed=args.split_seed, builder_options=options)
  metadata, stats = dataset_metadata(builder)
  print(f"prepared {args.dataset} in {builder.data_dir}")
  if args.json:
    print(json.dumps({"organs": metadata.to_dict()["organs"], **stats}, indent=2, default=str))
  else:
    print(format_report(args.dataset, metadata, stats, args.scale_factor, args.num_levels), end="")
  return 0


def _run_train(args, overrides) -> int:
  from mask_hybridgnet_jax.train.loop import train_and_evaluate

  if args.distributed:
    import jax

    # Must run before any other JAX call starts the backend.
    jax.distributed.initialize()
  config = _load_config(args, overrides)
  result = train_and_evaluate(config, args.workdir)
  print(f"training finished; workdir: {os.path.abspath(args.workdir)}")
  if result:
    print(json.dumps(result, indent=2))
  return 0


def _run_predict(args) -> int:
  from mask_hybridgnet_jax.predict import Predictor, find_images, load_trained_model, predict_files

  trained = load_trained_model(args.workdir, args.checkpoint)
  paths = find_images(args.inputs)
  if not paths:
    print(f"error: no images found in {' '.join(args.inputs)}", file=sys.stderr)
    return 2
  predictor = Predictor(trained, batch_size=args.batch_size, num_samples=args.num_samples)
  report = predict_files(predictor, paths, args.output_dir, overlay=not args.no_overlay,
                         write_pixel_masks=args.write_pixel_masks)
  print(f"predicted {len(report.outputs)} of {len(paths)} images into "
        f"{os.path.abspath(args.output_dir)}")
  if report.failures:
    print(f"{len(report.failures)} image(s) failed:", file=sys.stderr)
    for path, reason in report.failures.items():
      print(f"  {path}: {reason}", file=sys.stderr)
    return 1
  return 0


def _run_evaluate(args) -> int:
  from mask_hybridgnet_jax import evaluate as evaluate_lib

  if args.workdir:
    from mask_hybridgnet_jax.datasets.common import read_split
    from mask_hybridgnet_jax.predict import Predictor, load_trained_model
    from mask_hybridgnet_jax.train.loop import load_config_builder

    trained = load_trained_model(args.workdir, args.checkpoint)
    source = read_split(load_config_builder(trained.config, args.workdir), args.split)
    rows = evaluate_lib.evaluate_source(Predictor(trained, batch_size=args.batch_size), source)
    output_dir = args.output_dir or os.path.join(args.workdir, f"eval_{args.split}")
    print(f"checkpoint: {trained.checkpoint_dir}")
  elif args.predictions and args.masks and args.metadata:
    from mask_hybridgnet_jax.organs import DatasetMetadata

    metadata = DatasetMetadata.load(args.metadata)
    rows, missing = evaluate_lib.evaluate_folders(
        args.predictions, args.masks, metadata,
        tuple(args.spacing) if args.spacing else None)
    if missing:
      print(f"warning: {len(missing)} ground-truth mask(s) have no prediction: "
            f"{', '.join(missing[:10])}", file=sys.stderr)
    output_dir = args.output_dir or args.predictions
  else:
    print("error: give --workdir (dataset split mode) or --predictions, --masks and "
          "--metadata (folders mode)", file=sys.stderr)
    return 2
  paths = evaluate_lib.write_results(rows, output_dir)
  print(evaluate_lib.format_summary(rows))
  print(f"per-image metrics: {paths['csv']}")
  if "dice_plot" in paths:
    print(f"Dice box plot: {paths['dice_plot']}")
  return 0


def _run_demo(args) -> int:
  from mask_hybridgnet_jax.demo import run_demo

  run_demo(args.output_dir, num_images=args.num_images, total_examples=args.total_examples)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  overrides, rest = _split_overrides(argv)
  parser = build_parser()
  args = parser.parse_args(rest)
  logging.basicConfig(
      level=logging.DEBUG if args.verbose else logging.INFO,
      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  # Library loggers are chatty; keep this project's messages. TFDS logs
  # warnings such as "Variant folder ... has no dataset_info.json" for every
  # dataset it prepares, which are expected here.
  # pydicom logs every invalid UID it reads (Sunnybrook has one per file).
  for noisy in ("absl", "jax", "orbax", "tensorflow_datasets", "pydicom"):
    logging.getLogger(noisy).setLevel(logging.ERROR)
  if overrides and args.command != "train":
    parser.error(f"--config.{overrides[0]}: config overrides only apply to `train`")

  from mask_hybridgnet_jax import config_utils

  try:
    if args.command == "demo":
      return _run_demo(args)
    if args.command == "datasets":
      from mask_hybridgnet_jax.datasets.registry import BUILDERS, list_datasets
      for name in list_datasets():
        summary = (BUILDERS[name].__doc__ or "").strip().splitlines()[0]
        print(f"{name:<16} {summary}")
      return 0
    if args.command == "prepare":
      return _run_prepare(args)
    if args.command == "train":
      try:
        return _run_train(args, overrides)
      except KeyboardInterrupt:
        print(f"\ninterrupted; rerun the same command to resume from the last checkpoint "
              f"in {os.path.abspath(args.workdir)}", file=sys.stderr)
        return 130
    if args.command == "predict":
      return _run_predict(args)
    if args.command == "evaluate":
      return _run_evaluate(args)
    from mask_hybridgnet_jax.analysis import commands as analysis_commands
    if args.command in analysis_commands.COMMANDS:
      return analysis_commands.run(args)
  except (config_utils.ConfigError, FileNotFoundError, ValueError) as e:
    # Input errors carry their own explanation; --verbose adds the traceback.
    if args.verbose:
      raise
    print(f"error: {e}", file=sys.stderr)
    return 2
  parser.error(f"unknown command {args.command}")
  return 2


if __name__ == "__main__":
  sys.exit(main())
