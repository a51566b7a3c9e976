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
#   benchmarks/gpu_session.sh rows PRESET...
#       train each preset to the end (train_agent.py), score it on the test split, and append its best.pt,
#       history, summary, config, test figures and log to $OUT/rows.tar (one file: the tool brings back 8).
#       On one H100 a 200-epoch MNIST preset took 83 s and a 300-epoch cluttered one 124-147 s (-gpu presets);
#       a row adds about 3 MB, and one file of at most 16 MB comes back: five rows per call at most.
#       Back here: `tar -xf rows.tar -C runs/gpu`, then ship each with benchmarks/build_manifest.py --source.
# Stages can be chained in one call: `benchmarks/gpu_session.sh check accuracy mnist_b1024`.
# DEVICE (default cuda) and TRAIN_ARGS (extra train_agent.py flags) exist for a dry run on a CPU; TRAIN_ARGS with
# RUN_SUFFIX (appended to each run's name) also tries a recipe variant: a winning variant becomes a preset of its own.
# Figures go to $OUT (the device tool's return folder) or results/, as *_cuda.json / *_cuda.png; the training runs
# themselves go to $RUNS (default /tmp/gpu_runs), since the device tool brings back only a few files.
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:?usage: benchmarks/gpu_session.sh prepare | check [env] [accuracy [NAME...]] [rows PRESET...]}"
out="${OUT:-results}"
runs="${RUNS:-/tmp/gpu_runs}"
device="${DEVICE:-cuda}"

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
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"

declare -A presets=([mnist_b128]="mnist-6g 60" [mnist_b1024]="mnist-6g-gpu 60" [cluttered60_b1024]="cluttered60-6g-gpu 300")
while [ $# -gt 0 ]; do
    stage="$1"
    shift
    case "$stage" in
    check)
        python3 -m pytest -q -p no:cacheprovider tests/agents/test_trainer.py tests/ram_env/test_vector.py \
            -k "cuda or capture or host_sync" 2>&1 | tee "$out/gpu_tests_cuda.txt"
        python3 benchmarks/bench_train.py --device "$device" --batch-sizes 128 1024 8192 --cuda-graph on off --seconds 5 \
            --json "$out/bench_train_cuda.json"
        ;;
    env)
        python3 benchmarks/bench_env.py --device "$device" --json "$out/bench_env_cluttered60_cuda.json"
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
            python3 benchmarks/time_to_accuracy.py --preset "$preset" --device "$device" --seconds "$seconds" \
                --output "$runs/$name" --json "$out/time_to_accuracy_${name}_cuda.json" --png "$runs/$name.png"
            python3 evaluate.py "$runs/$name" --device "$device" --mc-samples 10 --json "$out/test_${name}_cuda.json"
        done
        ;;
    rows)
        mkdir -p "$runs"
        while [ $# -gt 0 ] && ! [[ "$1" =~ ^(check|env|accuracy|rows)$ ]]; do
            preset="$1"
            name="$1${RUN_SUFFIX:-}"
            shift
            start=$SECONDS
            # shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
            python3 train_agent.py --preset "$preset" --device "$device" --output "$runs/$name" --overwrite \
                ${TRAIN_ARGS:-} >"$runs/$name.log" 2>&1
            status=$?
            echo "$name: train_agent.py exit $status after $((SECONDS - start)) s"
            tail -c 400 "$runs/$name.log" | tr '\r' '\n' | tail -2
            [ $status -eq 0 ] || continue
            python3 evaluate.py "$runs/$name" --device "$device" --mc-samples 10 --json "$runs/$name/test.json"
            tar -C "$runs" -rf "$out/rows.tar" "$name/best.pt" "$name/history.jsonl" "$name/summary.json" \
                "$name/config.json" "$name/test.json" "$name.log"
        done
        ;;
    *)
        echo "unknown stage $stage: prepare, check, env, accuracy [NAME...] or rows PRESET..." >&2
        exit 2
        ;;
    esac
done
