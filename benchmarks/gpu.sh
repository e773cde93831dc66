#!/usr/bin/env bash
# The GPU check in one script: the CUDA-marked tests and the speed of a training step on the
# GPU (aevb against its floor, and against the pytorch/examples-style loop), results in a folder.
#
#   bash benchmarks/gpu.sh [OUT_DIR]            # default OUT_DIR: gpu-results
#
# Python: $AEVB_GPU_PYTHON if set; else a python3 whose torch already sees a GPU (a GPU
# machine's image usually has one); else a fresh venv (in $AEVB_GPU_VENV, default a temporary
# folder) into which `pip install torch==2.13.0` brings the default wheel, which on Linux is
# the CUDA build. aevb itself is put on PYTHONPATH from this checkout (no install needed);
# its own dependencies must be importable (the script says which one is missing).
# Without a GPU it still runs its CPU parts (the CUDA tests skip, the benchmarks run on the
# CPU), so the script itself is tested on any machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-results}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

has_cuda() { "$1" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }
py=${AEVB_GPU_PYTHON:-}
if [ -z "$py" ]; then
  for cand in python3 python; do
    if command -v "$cand" >/dev/null && has_cuda "$cand"; then py=$cand; break; fi
  done
fi
if [ -z "$py" ]; then
  venv=${AEVB_GPU_VENV:-$(mktemp -d)/venv}
  echo "no python with a CUDA torch here: making a venv in $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q torch==2.13.0
  "$venv/bin/python" -m pip install -q -e ".[test]"
  py="$venv/bin/python"
fi
"$py" - <<'EOF' | tee "$out/device.txt"
import importlib, platform, torch
missing = [m for m in ("numpy", "safetensors", "yaml", "tqdm", "matplotlib", "sklearn", "pytest")
           if importlib.util.find_spec(m) is None]
print("python", platform.python_version(), "torch", torch.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
if missing:
    raise SystemExit(f"missing Python packages for aevb: {', '.join(missing)}")
EOF
device=$("$py" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')

set +e
"$py" -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tee "$out/tests.txt"
tests_rc=${PIPESTATUS[0]}
set -e
[ "$tests_rc" = 5 ] && tests_rc=0  # no test selected (pytest's 5) is not a failure here

steps=${AEVB_GPU_STEPS:-100}
blocks=${AEVB_GPU_BLOCKS:-7}
"$py" benchmarks/floor.py --device "$device" --steps "$steps" --blocks "$blocks" --json "$out/floor-mlp100.json" | tee "$out/floor.txt"
"$py" benchmarks/floor.py --device "$device" --batch 1000 --steps "$((steps / 5 > 0 ? steps / 5 : 1))" --blocks "$blocks" --json "$out/floor-mlp1000.json" | tee -a "$out/floor.txt"
"$py" benchmarks/floor.py --device "$device" --net conv --steps "$steps" --blocks "$blocks" --json "$out/floor-conv100.json" | tee -a "$out/floor.txt"
"$py" benchmarks/gpu_peers.py --device "$device" --rounds "${AEVB_GPU_ROUNDS:-3}" --json "$out/peers.json" | tee "$out/peers.txt"
echo "results in $out (tests exit status $tests_rc)"
exit "$tests_rc"
