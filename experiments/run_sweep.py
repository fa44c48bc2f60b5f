"""Train and evaluate every member of a config file's sweep, resuming where it stopped.

  python experiments/run_sweep.py --config configs/montgomery.py \
      --sweep_dir runs/sweep_montgomery \
      --config.dataset.manual_dir=/path/to/montgomery

Each member trains in `<sweep_dir>/<member>` and is evaluated on the test
split. Rerunning the same command skips finished members and resumes an
interrupted one from its latest checkpoint. `--only a,b` runs a subset.
Then build the table with experiments/collect_results.py.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mask_hybridgnet_jax import config_utils
from mask_hybridgnet_jax.sweep import SweepError, run_sweep


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  overrides = [a[len("--config."):] for a in argv if a.startswith("--config.")]
  rest = [a for a in argv if not a.startswith("--config.")]
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="config file with get_config and sweep")
  parser.add_argument("--sweep_dir", required=True, help="folder of the member workdirs")
  parser.add_argument("--only", default="", help="comma-separated member names to run")
  parser.add_argument("--split", default="test", help="split to evaluate (default: %(default)s)")
  parser.add_argument("--eval_batch_size", type=int, default=8,
                      help="images per prediction batch in the evaluation")
  args = parser.parse_args(rest)
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  for noisy in ("absl", "jax", "orbax", "tensorflow_datasets"):
    logging.getLogger(noisy).setLevel(logging.ERROR)
  only = [name for name in args.only.split(",") if name] or None
  try:
    status = run_sweep(args.config, args.sweep_dir, overrides, only=only, split=args.split,
                       eval_batch_size=args.eval_batch_size)
  except (SweepError, config_utils.ConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for name, outcome in status.items():
    print(f"{name}: {outcome}")
  return 1 if any(o.startswith("failed") for o in status.values()) else 0


if __name__ == "__main__":
  sys.exit(main())
