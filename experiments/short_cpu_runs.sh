#!/usr/bin/env bash
# Short CPU runs behind docs/results.md: HC18 (with head circumference),
# PSFHS and JSRT mask-to-graph fidelity, each 4,000 examples at input 128.
# Usage:
#   bash experiments/short_cpu_runs.sh DATA_DIR RUNS_DIR
# DATA_DIR holds hc18/, psfhs/ and jsrt_landmarks/ in their distributed layouts.
set -uo pipefail
data=${1:?usage: short_cpu_runs.sh DATA_DIR RUNS_DIR}
runs=${2:?usage: short_cpu_runs.sh DATA_DIR RUNS_DIR}
# The documented runs used dense graph propagation, the default before
# commit bcf17e3. The edge-list default since then rounds
# differently, so it would not repeat the run exactly.
short="--config.dataset.image_size=128 --config.train.total_examples=4000 \
  --config.train.eval_every_steps=1000 --config.train.checkpoint_every_steps=1000 \
  --config.model.propagation=dense"

start=$(date +%s)
mask-hybridgnet train --config configs/hc18.py --workdir "$runs/hc18" \
    --config.dataset.manual_dir="$data/hc18" $short
echo "hc18 train wall time: $(( $(date +%s) - start )) s"
mask-hybridgnet evaluate --workdir "$runs/hc18" --split test
mask-hybridgnet predict --workdir "$runs/hc18" --output_dir "$runs/hc18/pred" \
    "$data"/hc18/training_set/*HC.png
mask-hybridgnet head-circumference --predictions "$runs/hc18/pred" \
    --table "$data/hc18/training_set_pixel_size_and_HC.csv" \
    --workdir "$runs/hc18" --split test --output_dir "$runs/hc18/hc"

start=$(date +%s)
mask-hybridgnet train --config configs/psfhs.py --workdir "$runs/psfhs" \
    --config.dataset.manual_dir="$data/psfhs" $short
echo "psfhs train wall time: $(( $(date +%s) - start )) s"
mask-hybridgnet evaluate --workdir "$runs/psfhs" --split test

start=$(date +%s)
mask-hybridgnet train --config configs/jsrt_mask2graph.py --workdir "$runs/jsrt" \
    --config.dataset.manual_dir="$data/jsrt_landmarks" $short
echo "jsrt train wall time: $(( $(date +%s) - start )) s"
mask-hybridgnet evaluate --workdir "$runs/jsrt" --split test
