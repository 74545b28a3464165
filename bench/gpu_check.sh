#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine that has torch/transformers/peft/Lightning but
# not hydra-core/omegaconf/antlr4 (carried as wheels in .whl/) and no network. Banking77 travels in
# .gpudata/ (copied from the data directory, never committed). Output lands in $OUT, phase by phase,
# most wanted first; each phase has its own time limit so that one slow phase leaves the others theirs.
set -uo pipefail
OUT=${OUT:-/tmp/ftexp-gpu}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD FTEXP_DATA_DIR=$PWD/.gpudata FTEXP_CACHE_DIR=/tmp/ftexp-cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
python3 -c "import torch, transformers, peft, pytorch_lightning as pl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'lightning', pl.__version__)" | tee -a "$OUT/card.txt"
# Issue 7's (b) 7B LoRA and (c) 1B full fine-tuning: ftexp (also with trainer.fused_loss, trainer.master_weights) against a plain loop.
timeout ${EAGER_S:-240} python3 bench/gpu_throughput.py --steps ${STEPS:-20} --warmup 5 2>&1 | grep --line-buffered -v Warning | tee "$OUT/gpu_throughput.txt"
# trainer.fused_loss on Banking77 with masked prompts (SmolLM2-135M shape, LoRA, bf16-mixed).
timeout ${FUSED_S:-90} python3 bench/fused_loss.py --steps 30 --warmup 5 --repeats 2 --batch-size 32 2>&1 \
  | grep --line-buffered -E "SmolLM|loss :|ratio|Error" | tee "$OUT/fused_loss.txt"
# The GPU tests (bf16-mixed job, hub-style LoRA job, flat packing in flash/flex attention).
timeout ${TESTS_S:-120} python3 -m pytest -p no:cacheprovider -m gpu tests/test_gpu.py -q -o addopts="" 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
# Compiled sides last (compile time is a minute or more per side): trainer.compile=true against plain + compile.
timeout ${COMPILE_S:-240} python3 bench/gpu_throughput.py --case ${COMPILE_CASE:-full1b} --compile --sides ${COMPILE_SIDES:-plain+c ftexp+c ftexp+cs ftexp+cm} \
  --steps ${STEPS:-20} --warmup 5 2>&1 | grep --line-buffered -v Warning | tee "$OUT/gpu_throughput_compile.txt"
