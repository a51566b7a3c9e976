#!/usr/bin/env bash
# The GPU checks and benchmarks, prepared to run as one call each on a lent GPU machine (one H100 or H200; nothing
# can be installed from the network there, and a call may run 10 minutes at most).
#
# Prepare once, here, in the repository root (both folders are ignored by git, and travel as `carry`):
#   benchmarks/gpu_session.sh prepare     # wheels of what the GPU image lacks into .whl/, MNIST into .data/
# Then, on the GPU machine, with `.whl` and `.data` carried:
#   benchmarks/gpu_session.sh check       # CUDA tests, bench_train per batch with and without the CUDA graph
#                                         #                                                        (about 2 min)
#   benchmarks/gpu_session.sh env         # bench_env on CUDA                                      (about 1 min)
#   benchmarks/gpu_session.sh accuracy [NAME...]
#       time to accuracy, then test error, of the named runs (default: all): mnist_b128 (mnist-6g, 60 s),
#       mnist_b1024 (mnist-6g-gpu, 60 s), cluttered60_b1024 (cluttered60-6g-gpu, 300 s)    (about 1.5 + 1.5 + 6 min)
# Stages can be chained in one call: `benchmarks/gpu_session.sh check accuracy mnist_b1024`.
# Figures go to $OUT (the device tool's return folder) or results/, as *_cuda.json / *_cuda.png; the training runs
# themselves go to $RUNS (default /tmp/gpu_runs), since the device tool brings back only a few files.
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:?usage: benchmarks/gpu_session.sh prepare | check [env] [accuracy [NAME...]]}"
out="${OUT:-results}"
runs="${RUNS:-/tmp/gpu_runs}"

if [ "$stage" = prepare ]; then
    mkdir -p .whl .data
    for package in gymnasium==1.4.0 farama-notifications==0.0.6 stable-baselines3==2.9.2 sb3-contrib==2.9.2; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "$package" || exit 1
    done
    cp -r "${RAM_DATA_DIR:-../shared/data}/mnist" .data/ || exit 1
    ls -l .whl .data/mnist
    exit 0
fi

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH="/tmp/site:$PWD" RAM_DATA_DIR="$PWD/.data" PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

declare -A presets=([mnist_b128]="mnist-6g 60" [mnist_b1024]="mnist-6g-gpu 60" [cluttered60_b1024]="cluttered60-6g-gpu 300")
while [ $# -gt 0 ]; do
    stage="$1"
    shift
    case "$stage" in
    check)
        python3 -m pytest -q -p no:cacheprovider tests/agents/test_trainer.py tests/ram_env/test_vector.py \
            -k "cuda or capture or host_sync" 2>&1 | tee "$out/gpu_tests_cuda.txt"
        python3 benchmarks/bench_train.py --device cuda --batch-sizes 128 1024 8192 --cuda-graph on off --seconds 5 \
            --json "$out/bench_train_cuda.json"
        ;;
    env)
        python3 benchmarks/bench_env.py --device cuda --json "$out/bench_env_cluttered60_cuda.json"
        ;;
    accuracy)
        names=()
        while [ $# -gt 0 ] && [ -n "${presets[$1]:-}" ]; do
            names+=("$1")
            shift
        done
        [ ${#names[@]} -gt 0 ] || names=(mnist_b128 mnist_b1024 cluttered60_b1024)
        # Train for a fixed wall time, keep the run, then score its best.pt on the test split.
        for name in "${names[@]}"; do
            read -r preset seconds <<<"${presets[$name]}"
            python3 benchmarks/time_to_accuracy.py --preset "$preset" --device cuda --seconds "$seconds" \
                --output "$runs/$name" --json "$out/time_to_accuracy_${name}_cuda.json" --png "$runs/$name.png"
            python3 evaluate.py "$runs/$name" --device cuda --mc-samples 10 --json "$out/test_${name}_cuda.json"
        done
        ;;
    *)
        echo "unknown stage $stage: prepare, check, env or accuracy [NAME...]" >&2
        exit 2
        ;;
    esac
done
