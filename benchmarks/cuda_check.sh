#!/usr/bin/env bash
# One command that checks a GPU machine: the cuda-marked tests, every tutorial end to end on the
# GPU (each fast path, resume, rerun, a sweep, torchrun over NCCL) and the benchmark, each step
# timed and written to one report file. Run from a checkout with dlrun installed:
#
#   bash benchmarks/cuda_check.sh                  # device=cuda, report in cuda-check/report.txt
#   DEVICE=cpu bash benchmarks/cuda_check.sh       # the same steps on the CPU (a dry run)
#   QUICK=1 bash benchmarks/cuda_check.sh          # the benchmark's small sizes
#
# Every step runs whatever happened before it; the exit code is the number of failed steps.
set -u
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-cuda-check}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
REPORT="$WORK/report.txt"
: >"$REPORT"
failed=0
say() { echo "$*" | tee -a "$REPORT"; }

# step NAME SECONDS COMMAND...: run it with a time limit; PASS or FAIL and its last lines
step() {
  local name=$1 limit=$2 start end code took
  shift 2
  start=$EPOCHREALTIME
  timeout "$limit" bash -c '"$@"' "$name" "$@" >"$WORK/$name.log" 2>&1  # functions too
  code=$?
  end=$EPOCHREALTIME
  took=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  if [ "$code" -eq 0 ]; then
    say "PASS  $name  $took s"
  else
    failed=$((failed + 1))
    say "FAIL  $name  exit $code  $took s"
    tail -n 15 "$WORK/$name.log" | sed 's/^/      /' | tee -a "$REPORT"
  fi
}
dlrun() { command dlrun "$@" device="$DEVICE" trainer.plots=false; }
# the weights of two runs' last.pt, equal bit for bit
same_weights() {
  python - "$1" "$2" <<'EOF'
import sys, torch
a, b = (torch.load(f"{d}/checkpoints/last.pt", map_location="cpu", weights_only=True)["model"]
        for d in sys.argv[1:])
bad = [k for k in a if not torch.equal(a[k], b[k])]
sys.exit(f"weights differ: {bad}" if bad else 0)
EOF
}
# MNIST-format files of learnable patterns (no download here)
fake_mnist() {
  python - "$1" <<'EOF'
import struct, sys
from pathlib import Path
import numpy as np
raw = Path(sys.argv[1]) / "MNIST" / "raw"
raw.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
for name, n in (("train", 6000), ("t10k", 1000)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, 2 * y : 2 * y + 3, :] = 250
    for suffix, array, magic in (("images-idx3-ubyte", images, 2051), ("labels-idx1-ubyte", labels, 2049)):
        header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
        (raw / f"{name}-{suffix}").write_bytes(header + array.tobytes())
EOF
}

export DEVICE
export -f dlrun same_weights
say "dlrun GPU check, device=$DEVICE, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
python - <<'EOF' | tee -a "$REPORT"
import platform, torch, dlrun
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"GPU {gpu} x {torch.cuda.device_count()}, dlrun {dlrun.__version__}")
EOF

step cuda-tests 240 python -m pytest -q -m cuda -p no:cacheprovider tests
R="$WORK/runs"
rm -rf "$R" && mkdir -p "$R"
fake_mnist "$R/data"
step fizzbuzz 120 dlrun task=fizzbuzz trainer.epochs=2000 hydra.run.dir="$R/fizzbuzz"
step sine-bp 60 dlrun task=sine-bp hydra.run.dir="$R/sine-bp"
step mnist 120 dlrun task=mnist trainer.epochs=2 data.root="$R/data" data.download=false \
  hydra.run.dir="$R/mnist"
step nw-kernel 60 dlrun task=nw-kernel hydra.run.dir="$R/nw-kernel"
step kmeans 60 dlrun task=kmeans data.kind=blobs data.n=100000 hydra.run.dir="$R/kmeans"
python - "$R/housing.csv" <<'EOF2'
import sys
import numpy as np
rng = np.random.default_rng(0)
x = rng.normal(size=(2000, 8))
y = x @ rng.normal(size=8) + 2 + rng.normal(0, 0.1, 2000)
cols = "MedInc,HouseAge,AveRooms,AveBedrms,Population,AveOccup,Latitude,Longitude,MedHouseVal"
np.savetxt(sys.argv[1], np.column_stack([x, y]), delimiter=",", header=cols, comments="")
EOF2
step housing 60 dlrun task=housing-regression data.path="$R/housing.csv" hydra.run.dir="$R/housing"
for path in trainer.cuda_graph=true trainer.cuda_graph=false trainer.precision=bf16 \
  trainer.compile=true task.impl=scratch; do
  [ "$DEVICE" = cpu ] && [ "$path" = trainer.precision=bf16 ] && continue  # refused on the CPU
  name="sine-bp-${path//[.=]/-}"
  step "$name" 120 dlrun task=sine-bp trainer.epochs=300 "$path" hydra.run.dir="$R/$name"
done
step mnist-cuda-graph 120 dlrun task=mnist trainer.epochs=2 trainer.cuda_graph=true \
  data.root="$R/data" data.download=false hydra.run.dir="$R/mnist-graph"
# the step each run chose, and why (the default is a CUDA graph wherever the step allows it)
grep -h "train step:\|trainer.cuda_graph=\|trainer.precision=\|trainer.compile=" \
  "$R"/*/dlrun.log 2>/dev/null | sed 's/^.*\] - /      /' | sort | uniq -c | tee -a "$REPORT"
# resume: half, then the rest, against one uninterrupted run
SINE=(task=sine-bp trainer.epochs=400 trainer.checkpoint_every=50)
step resume-whole 60 dlrun "${SINE[@]}" hydra.run.dir="$R/whole"
step resume-half 60 dlrun "${SINE[@]}" trainer.epochs=200 hydra.run.dir="$R/half"
step resume-rest 60 command dlrun resume="$R/half" trainer.epochs=400
step resume-same-weights 30 same_weights "$R/whole" "$R/half"
step rerun-verify 120 dlrun-rerun "$R/sine-bp" --verify hydra.run.dir="$R/again"
step sweep 180 command dlrun -m task=sine-bp trainer.epochs=200 optimizer.lr=0.1,0.3 \
  device="$DEVICE" trainer.plots=false hydra.sweep.dir="$R/sweep"
step report 30 dlrun-report "$R/sweep"
if [ "$DEVICE" = cuda ]; then
  step torchrun-nccl 180 torchrun --standalone --nproc_per_node=1 -m dlrun task=sine-bp \
    trainer.epochs=200 device=cuda trainer.plots=false hydra.run.dir="$R/torchrun"
fi
step eval-on-cpu 60 dlrun-eval "$R/sine-bp" device=cpu
BENCH=(python benchmarks/bench.py --device "$DEVICE")
[ -n "${QUICK:-}" ] && BENCH+=(--quick)
step benchmark 300 "${BENCH[@]}"
grep '^{' "$WORK/benchmark.log" >>"$REPORT" 2>/dev/null
say "$failed step(s) failed; report: $REPORT"
exit "$failed"
