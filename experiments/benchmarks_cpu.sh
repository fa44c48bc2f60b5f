#!/usr/bin/env bash
# The measurements of docs/benchmarks.md that need no dataset, one after the
# other, each writing a JSON file (the profile a folder) into OUT_DIR.
# Usage:
#   bash experiments/benchmarks_cpu.sh OUT_DIR
# Run it on an otherwise idle machine: the ratios come from one process each,
# but the absolute times depend on what else runs.
set -euo pipefail
out=${1:?usage: benchmarks_cpu.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
config="$here/../configs/montgomery.py"

python "$here/benchmark_train.py" --config "$config" --steps 20 --breakdown \
    --compare_dtypes --output "$out/train.json"
python "$here/benchmark_input.py" --image_size 128 --batch_sizes 1 4 --seconds 10 \
    --work_dir "$out/input_data" --train_json "$out/train.json" --output "$out/input.json"
python "$here/benchmark_inference.py" --config "$config" --batch_sizes 1 16 \
    --repeats 5 --output "$out/inference.json"
python "$here/benchmark_propagation.py" --template montgomery \
    --batch_sizes 1 4 16 64 --repeats 5 --output "$out/propagation_montgomery.json"
python "$here/benchmark_propagation.py" --template lungs_heart \
    --batch_sizes 1 4 16 64 --repeats 5 --output "$out/propagation_lungs_heart.json"
python "$here/benchmark_raster.py" --size 256 --vertices 64 256 512 --repeats 3 \
    --output "$out/raster.json"
python "$here/benchmark_chamfer.py" --points 1024 2048 4096 8192 16384 \
    --chunk_size 1024 --repeats 5 --output "$out/chamfer.json"
python "$here/profile_train_step.py" --config "$config" --output_dir "$out/profile"
