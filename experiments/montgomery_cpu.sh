#!/usr/bin/env bash
# Train, evaluate and predict on Montgomery with configs/montgomery.py, as
# reported in docs/results.md. Usage:
#   bash experiments/montgomery_cpu.sh /path/to/montgomery runs/montgomery
set -euo pipefail
data=${1:?usage: montgomery_cpu.sh MONTGOMERY_DIR WORKDIR}
workdir=${2:?usage: montgomery_cpu.sh MONTGOMERY_DIR WORKDIR}

# The documented run used dense graph propagation, the default before
# commit bcf17e3. The edge-list default since then rounds
# differently, so it would not repeat the run exactly.
start=$(date +%s)
mask-hybridgnet train --config configs/montgomery.py --workdir "$workdir" \
    --config.dataset.manual_dir="$data" --config.model.propagation=dense
echo "train wall time: $(( $(date +%s) - start )) s"

mask-hybridgnet evaluate --workdir "$workdir" --split test

# Overlays for the test split, images named by the evaluation CSV.
ids=$(tail -n +2 "$workdir/eval_test/metrics.csv" | cut -d, -f1 | sort -u)
images=()
for id in $ids; do images+=("$data/images/$id.png"); done
mask-hybridgnet predict --workdir "$workdir" --output_dir "$workdir/predict_test" "${images[@]}"
