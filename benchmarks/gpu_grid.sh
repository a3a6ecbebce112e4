#!/usr/bin/env bash
# The converged reproduction grid, and the paper-length ce / bbn, on one lent GPU in one call.
#
# The CPU grid (benchmarks/reproduce.py, docs/benchmarks.md "The converged grid") takes hours on
# 2 cores; on a GPU its 78 runs fit in minutes, run side by side. This script is what a session
# with a lent GPU runs through the device tool; nothing in the test suite or CI calls it.
#
#   here, once:  bash benchmarks/gpu_grid.sh --prepare
#                (the wheels the device image lacks, pydantic and its needs, go to .whl/ and the
#                Fashion-MNIST IDX files to .fmnist/; git ignores both through .git/info/exclude)
#   there:       device run, carry [".whl", ".fmnist"], timeout_s 600,
#                command "GRID_MINUTES=6 bash benchmarks/gpu_grid.sh"
#                (6 minutes leave room for benchmarks/gpu_check.py in the same 15-minute lease)
#                ("bash benchmarks/gpu_grid.sh --check" runs benchmarks/gpu_check.py there the same way)
#   back here:   bash benchmarks/gpu_grid.sh --unpack <files_at>/gpu_grid.tar.gz
#                (run records into benchmarks/results/reproduce/runs-cuda/, then the report)
#
# Processes: one per method group (ce with its stage-2 methods cRT / LWS / tau-norm, which need
# its checkpoints; every other method alone), each running seeds 0-2 in both class orders, plus
# ce and bbn at the paper's length (n_max 6000, 200 epochs, seed 0 first). Each process has a
# hard limit of GRID_MINUTES; a run cut there is lost (finished runs are what comes back). The
# records come back as one archive (no weights), with the report's JSON and Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."

FLAGS_CONVERGED="--epochs 60 --n-max 1000 --warmup-epochs 5 --gamma 0.01 --ratios 100 --seeds 0,1,2 --orders natural,permuted"
FLAGS_PAPER="--epochs 200 --n-max 6000 --warmup-epochs 5 --gamma 0.01 --ratios 100 --seeds 0,1,2 --orders natural"
ALL_METHODS="ce,bbn,ride,tau_norm,crt,lws,rs,rw,drw,ldam_drw,cb_focal,balanced_softmax,logit_adjust"
RECORDS=${GRID_RECORDS:-benchmarks/results/reproduce/runs-cuda}

case "${1:-}" in
  --prepare)
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    for path in /.whl/ /.fmnist/; do
      grep -qxF "$path" "$exclude" 2>/dev/null || echo "$path" >>"$exclude"
    done
    mkdir -p .whl .fmnist
    python3 -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "pydantic>=2.5,<3"
    src=/usr/share/datasets/fashion-mnist
    if [ ! -e "$src/train-images-idx3-ubyte.gz" ]; then
      echo "gpu_grid: no Fashion-MNIST in $src; install Debian's dataset-fashion-mnist first" >&2
      exit 1
    fi
    cp "$src"/*-ubyte.gz .fmnist/
    du -sh .whl .fmnist
    echo "gpu_grid: prepared; run it on the device with carry [\".whl\", \".fmnist\"]"
    exit 0
    ;;
  --unpack)
    archive=${2:?"usage: bash benchmarks/gpu_grid.sh --unpack PATH/gpu_grid.tar.gz"}
    mkdir -p "$RECORDS"
    # Only finished run folders of reproduce.py are in the archive. A file already here is kept
    # (never overwritten), so records accumulate over leases like the CPU grid's.
    tar -xzf "$archive" -C "$RECORDS" --skip-old-files
    echo "gpu_grid: records in $RECORDS: $(find "$RECORDS" -name results.json | wc -l) finished run(s)"
    for flags in "$FLAGS_CONVERGED" "$FLAGS_PAPER"; do
      # shellcheck disable=SC2086
      python benchmarks/reproduce.py $flags --methods "$ALL_METHODS" --device cuda --plain --report \
        --out-dir "$RECORDS" --out "benchmarks/results/reproduce_cuda_$(echo "$flags" | cut -d' ' -f2)ep.json" \
        --plots-dir "docs/assets/reproduce_cuda_$(echo "$flags" | cut -d' ' -f2)ep"
    done
    exit 0
    ;;
  "" | --check) ;;
  *)
    echo "gpu_grid: unknown argument '$1'; use --prepare, --unpack ARCHIVE, --check or nothing (the grid)" >&2
    exit 2
    ;;
esac

# ---------------------------------------------------------------- on the GPU machine
device=${GRID_DEVICE:-cuda}  # GRID_DEVICE=cpu only to try the plumbing on a machine without one
if [ "$device" = cuda ] && ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_grid: no CUDA device here; this script is for a lent GPU" >&2
  exit 1
fi
if [ "${1:-}" != --check ] && [ ! -e .fmnist/train-images-idx3-ubyte.gz ]; then
  echo "gpu_grid: .fmnist/ is missing; run 'bash benchmarks/gpu_grid.sh --prepare' here and carry .fmnist" >&2
  exit 1
fi
if ! python3 -c "import pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out=${OUT:-/tmp/gpu_grid_out}
if [ "${1:-}" = --check ]; then  # the trainer issue's prepared GPU check, with the same environment
  # Its parts write a dozen files; they come back as one archive (the device returns 8 files at most).
  mkdir -p "$out"
  status=0
  python3 benchmarks/gpu_check.py --out-dir /tmp/gpu_check --out "$out/gpu_check.json" || status=$?
  if [ -d /tmp/gpu_check ]; then tar -czf "$out/gpu_check_parts.tar.gz" -C /tmp gpu_check; fi
  exit "$status"
fi
work=/tmp/gpu_grid
mkdir -p "$out" "$work/logs" "$work/runs"
# Records of earlier leases travel with the tree: their runs are skipped, so the grid accumulates.
if [ -d "$RECORDS" ]; then cp -r "$RECORDS"/. "$work/runs"/; fi
limit=$(( ${GRID_MINUTES:-6} * 60 ))
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

launch() {  # name, flags, methods
  # shellcheck disable=SC2086
  timeout "$limit" python3 benchmarks/reproduce.py $2 --methods "$3" --device "$device" --threads 1 --plain \
    --data-root .fmnist --out-dir "$work/runs" --out "$work/$1.json" --plots-dir "$work/plots-$1" \
    >"$work/logs/$1.log" 2>&1 &
}
started=$(date +%s)
launch ce "$FLAGS_CONVERGED" ce,tau_norm,crt,lws
for method in bbn ride rs rw drw ldam_drw cb_focal balanced_softmax logit_adjust; do
  launch "$method" "$FLAGS_CONVERGED" "$method"
done
launch paper-ce "$FLAGS_PAPER" ce
launch paper-bbn "$FLAGS_PAPER" bbn
wait || true
# timeout stops reproduce.py, not the lttk train it started: stop those too before packing.
pkill -f -- "$work/runs" || true  # only this script's runs
sleep 2
echo "gpu_grid: processes ended after $(( $(date +%s) - started )) s"
grep -h "test top-1\|FAILED" "$work"/logs/*.log || true

# Finished runs only (a run cut by the limit has no results.json and could not resume elsewhere).
(cd "$work/runs" && find . -mindepth 3 -maxdepth 3 -name results.json -printf '%h\n' | sort) >"$work/finished.txt"
echo "gpu_grid: $(wc -l <"$work/finished.txt") finished run(s)"
tar -czf "$out/gpu_grid.tar.gz" -C "$work/runs" --exclude='*.pt' -T "$work/finished.txt"
tar -czf "$out/gpu_grid_logs.tar.gz" -C "$work" logs
for flags in "$FLAGS_CONVERGED" "$FLAGS_PAPER"; do
  # shellcheck disable=SC2086
  python3 benchmarks/reproduce.py $flags --methods "$ALL_METHODS" --device cuda --plain --report \
    --out-dir "$work/runs" --out "$out/reproduce_cuda_$(echo "$flags" | cut -d' ' -f2)ep.json" \
    --plots-dir "$work/plots" | tail -n 30 || true
done
ls -la "$out"
