#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine that has torch/transformers/peft/Lightning but
# not hydra-core/omegaconf/antlr4 (carried as wheels in .whl/) and no network. Banking77 travels in
# .gpudata/ (copied from the data directory, never committed). Output lands in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/ftexp-gpu}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD FTEXP_DATA_DIR=$PWD/.gpudata FTEXP_CACHE_DIR=/tmp/ftexp-cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft, pytorch_lightning as pl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'lightning', pl.__version__)"
python3 -m pytest -p no:cacheprovider -m gpu tests/test_gpu.py -q -o addopts="" 2>&1 | tail -15
/usr/bin/time -f "demo wall %e s, max RSS %M KB" python3 -m ftexp trainer=gpu logger=csv trainer.enable_progress_bar=false \
  hydra.run.dir="$OUT/demo_gpu" 2>&1 | grep -E "row|ftexp:|wall|Error|error" | tail -8
cp "$OUT/demo_gpu/results.json" "$OUT/demo_gpu_results.json" 2>/dev/null; rm -rf "$OUT/demo_gpu"
# Issue 7's (b) and (c): 7B LoRA and 1B full fine-tuning, ftexp against a plain loop, same run.
python3 bench/gpu_throughput.py 2>&1 | tail -7 | tee "$OUT/gpu_throughput.txt"
# Compiled sides last (compile time is minutes on a 1B model): trainer.compile=true against plain + compile.
python3 bench/gpu_throughput.py --case full1b --compile 2>&1 | tail -6 | tee "$OUT/gpu_throughput_compile.txt"
