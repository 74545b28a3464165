#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine that has torch/transformers/peft/Lightning but
# not hydra-core/omegaconf/antlr4 (carried as wheels in .whl/) and no network. Banking77 travels in
# .gpudata/ (copied from the data directory, never committed). Output lands in $OUT, phase by phase,
# most wanted first; each phase has its own time limit so that one slow phase leaves the others theirs.
#   PHASES="eager tests compile" STEPS=15 EAGER_SIDES="plain ftexp ftexp+m" EAGER_S=160 TESTS_S=100 \
#     COMPILE_S=300 CTIME_S=1 COMPILE_SIDES="ftexp+cm ftexp+c plain+c" bash bench/gpu_check.sh  # 511 s on an H100
#   PHASES=profile bash bench/gpu_check.sh             # at most 2 x 100 s
# optim.implementation=compiled (the master-weight step compiled), not yet measured on a GPU:
# (full1b only: LoRA's few trained weights leave master weights nothing to save, and its 448 adapter
# tensors would make the step's compilation long)
#   PHASES="master eager tests compile" STEPS=15 MASTER_S=90 EAGER_CASE=full1b EAGER_SIDES="ftexp+m ftexp+mo" \
#     EAGER_S=120 TESTS_S=100 COMPILE_CASE=full1b COMPILE_SIDES="ftexp+cmo ftexp+cm" COMPILE_S=220 CTIME_S=1 \
#     bash bench/gpu_check.sh                          # at most 530 s
# (phase "fused": trainer.fused_loss on Banking77's masked prompts, when there is time to spare)
set -uo pipefail
OUT=${OUT:-/tmp/ftexp-gpu}; mkdir -p "$OUT"
PHASES=" ${PHASES:-eager profile compile tests master fused} "
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD FTEXP_DATA_DIR=$PWD/.gpudata FTEXP_CACHE_DIR=/tmp/ftexp-cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
python3 -c "import torch, transformers, peft, pytorch_lightning as pl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'lightning', pl.__version__)" | tee -a "$OUT/card.txt"
tidy() { grep --line-buffered -v Warning; }
# Issue 7's (b) 7B LoRA and (c) 1B full fine-tuning: ftexp (also with trainer.master_weights, trainer.fused_loss) against a plain loop.
[[ $PHASES == *" eager "* ]] && timeout ${EAGER_S:-240} python3 bench/gpu_throughput.py --case ${EAGER_CASE:-lora7b full1b} \
  --steps ${STEPS:-20} --warmup 5 \
  --sides ${EAGER_SIDES:-plain ftexp ftexp+m ftexp+f} 2>&1 | tidy | tee "$OUT/gpu_throughput.txt"
# The master-weight step after the backward on Llama-1B's weights: eager (fused AdamW) against compiled.
[[ $PHASES == *" master "* ]] && timeout ${MASTER_S:-120} python3 bench/master_step.py 2>&1 | tidy | tee "$OUT/master_step.txt"
# trainer.fused_loss on Banking77 with masked prompts (SmolLM2-135M shape, LoRA, bf16-mixed).
[[ $PHASES == *" fused "* ]] && timeout ${FUSED_S:-90} python3 bench/fused_loss.py --steps 30 --warmup 5 --repeats 2 --batch-size 32 2>&1 \
  | grep --line-buffered -E "SmolLM|loss :|ratio|Error" | tee "$OUT/fused_loss.txt"
# Where the step's time goes (kernels by kind), for the sides the MFU goals hang on.
if [[ $PHASES == *" profile "* ]]; then
  for cs in ${PROFILE_SIDES:-lora7b:ftexp+m full1b:ftexp+m}; do
    timeout ${PROFILE_S:-100} python3 bench/gpu_profile.py --case ${cs%%:*} --side ${cs##*:} 2>&1 \
      | grep --line-buffered -v -E "Warning|warn|USDT|Tip|available|LOCAL_RANK|stopped|dataloader" | tee -a "$OUT/gpu_profile.txt"
  done
fi
# The GPU tests (bf16-mixed job, hub-style LoRA job, flat packing in flash/flex attention, the compiled master-weight step against the fused one).
[[ $PHASES == *" tests "* ]] && timeout ${TESTS_S:-120} python3 -m pytest -p no:cacheprovider -m gpu tests/gpu -q -o addopts="" 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
# Compiled sides (each decoder layer compiled by default: compile time does not grow with depth).
[[ $PHASES == *" compile "* ]] && timeout ${COMPILE_S:-280} python3 bench/gpu_throughput.py --case ${COMPILE_CASE:-full1b lora7b} --compile \
  --sides ${COMPILE_SIDES:-ftexp+c ftexp+cm plain+c} --steps ${STEPS:-20} --warmup 5 2>&1 | tidy | tee "$OUT/gpu_throughput_compile.txt"
# Compile time, 24 layers: each decoder layer against the whole step (cold cache per side).
[[ $PHASES == *" compile "* ]] && timeout ${CTIME_S:-150} python3 bench/compile_time.py --layers 24 --batch-size 8 --seq 1024 2>&1 \
  | grep --line-buffered -E "^(Llama|side|eager|layers|step)" | tee "$OUT/compile_time.txt"
exit 0
