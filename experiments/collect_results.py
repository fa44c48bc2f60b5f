"""Collect a sweep's test metrics into one markdown table with Wilcoxon tests.

  python experiments/collect_results.py --sweep_dir runs/sweep_montgomery \
      --baseline baseline

Writes `<sweep_dir>/results.md` (or `--output`) and prints it: per member
and organ, mean ± standard deviation of Dice, Hausdorff and ASSD, and the
p-value of a paired Wilcoxon signed-rank test against the baseline member.
"""

from __future__ import annotations

import argparse
import sys

from mask_hybridgnet_jax.sweep import SweepError, collect_results


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sweep_dir", required=True, help="folder written by run_sweep.py")
  parser.add_argument("--baseline", required=True, help="member the others are tested against")
  parser.add_argument("--output", default=None,
                      help="markdown file to write (default: <sweep_dir>/results.md)")
  args = parser.parse_args(argv)
  try:
    print(collect_results(args.sweep_dir, args.baseline, args.output), end="")
  except SweepError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
