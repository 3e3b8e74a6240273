#!/usr/bin/env bash
# The prepared GPU check: on a machine with a CUDA GPU, in at most about 6 minutes, run the CUDA tests,
# the GPU rows of the lattice and training-step benchmarks and a short ACDC run of the published protocol
# (256x256, batch 12, the UNet), writing every table to one folder for the README.
#
#   bash benchmarks/device_check.sh [OUT] [ACDC_ROOT]
#
# OUT: results folder (default outputs/device_check). ACDC_ROOT: a prepared ACDC root (`rloss data
# prepare acdc`); without it the ACDC part trains on the test fixture (tests/data/acdc: timing only, its
# Dice means nothing). PYTHON: the interpreter (default .venv/bin/python, else python3) with rloss's
# dependencies; rloss itself is taken from src/. Each part has its own time limit; a part that fails or
# runs out of time is reported in OUT/summary.txt and the others still run. Exit 2 without a CUDA device.
set -u
OUT=${1:-outputs/device_check}
ACDC_ROOT=${2:-}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=offline
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "device_check.sh: error: $PYTHON sees no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine" >&2
    exit 2
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
"$PYTHON" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" > "$OUT/torch.txt"

# part NAME SECONDS COMMAND...: run COMMAND with its output in OUT/NAME.txt; one summary line.
part() {
    local name=$1 seconds=$2
    shift 2
    local start=$SECONDS
    timeout "$seconds" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    local verdict="ok"
    [ $rc -eq 124 ] && verdict="stopped at its ${seconds} s limit"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && verdict="failed (exit $rc)"
    echo "$name: $verdict in $((SECONDS - start)) s; output in $OUT/$name.txt" | tee -a "$SUMMARY"
}

part cuda_tests 120 "$PYTHON" -m pytest -q -p no:cacheprovider -rs tests/test_backends.py tests/test_lattice.py \
    tests/test_gatedcrf.py tests/test_regularizers.py tests/test_selflabel.py -k "cuda or gpu or device"
part lattice 90 "$PYTHON" benchmarks/lattice.py --reps 3 --output "$OUT/lattice.md"
part train_step 60 "$PYTHON" benchmarks/train_step.py --steps 5

if [ -z "$ACDC_ROOT" ]; then
    ACDC_ROOT="$OUT/acdc_fixture"
    rm -rf "$ACDC_ROOT" && cp -r tests/data/acdc "$ACDC_ROOT"
    ACDC_DATA=(--data.init_args.fold 3 --data.init_args.val_patients 0)  # the fixture's patient 091 trains
else
    ACDC_DATA=(--data.init_args.fold 1)
fi
part acdc_published 90 "$PYTHON" -m rloss fit --config configs/experiments/acdc/unet.yaml \
    --config configs/logger/csv.yaml --trainer.logger.init_args.save_dir "$OUT/acdc" \
    --data.init_args.root "$ACDC_ROOT" "${ACDC_DATA[@]}" \
    --model.regularizers+=configs/regularizer/acdc_gatedcrf.yaml \
    --trainer.accelerator gpu --trainer.max_steps 200 --trainer.val_check_interval 200 \
    --trainer.enable_progress_bar false --checkpoint.dirpath "$OUT/acdc/checkpoints" \
    --last_checkpoint.dirpath "$OUT/acdc/checkpoints"
cat "$SUMMARY"
