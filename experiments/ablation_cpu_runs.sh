#!/usr/bin/env bash
# CPU-scale ablation sweeps behind docs/ablations.md: Montgomery (baseline,
# unified, no_raster, dual, bf16) and PSFHS (baseline, unified, no_raster),
# each member 4,000 examples at input 128, then one results table per sweep.
# Usage:
#   bash experiments/ablation_cpu_runs.sh DATA_DIR RUNS_DIR
# DATA_DIR contains montgomery/ and psfhs/ in their distributed layouts.
# Rerunning the same command skips finished members.
set -uo pipefail
data=${1:?usage: ablation_cpu_runs.sh DATA_DIR RUNS_DIR}
runs=${2:?usage: ablation_cpu_runs.sh DATA_DIR RUNS_DIR}
here=$(cd "$(dirname "$0")" && pwd)
# The documented runs used dense graph propagation, the default before
# commit bcf17e3. The edge-list default since then rounds
# differently, so it would not repeat the run exactly.
short="--config.dataset.image_size=128 --config.train.total_examples=4000 \
  --config.train.eval_every_steps=1000 --config.train.checkpoint_every_steps=1000 \
  --config.model.propagation=dense"

start=$(date +%s)
python "$here/run_sweep.py" --config "$here/../configs/montgomery.py" \
    --sweep_dir "$runs/sweep_montgomery" --only baseline,unified,no_raster,dual,bf16 \
    --config.dataset.manual_dir="$data/montgomery" $short
echo "montgomery sweep wall time: $(( $(date +%s) - start )) s"
python "$here/collect_results.py" --sweep_dir "$runs/sweep_montgomery" --baseline baseline

start=$(date +%s)
python "$here/run_sweep.py" --config "$here/../configs/psfhs.py" \
    --sweep_dir "$runs/sweep_psfhs" \
    --config.dataset.manual_dir="$data/psfhs" $short
echo "psfhs sweep wall time: $(( $(date +%s) - start )) s"
python "$here/collect_results.py" --sweep_dir "$runs/sweep_psfhs" --baseline baseline
