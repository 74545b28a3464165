"""trainer.fused_loss on fine-tuning data: ftexp's step with and without it, same batches, same process.

    python bench/fused_loss.py [--steps 12] [--warmup 2] [--repeats 2] [--batch-size 16] [--layers 30] [--full]

On a GPU (when CUDA is available) in bf16-mixed, as trainer=gpu runs; else on the CPU in fp32.

A SmolLM2-135M-shaped model (Llama, 49k vocabulary, random weights; --layers to shorten it) with LoRA
r16 on every linear layer of the decoder (--full: full fine-tuning) trains on Banking77 batches
(FTEXP_DATA_DIR) whose prompts are masked out of the loss, as ftexp trains them. The fused loss sends
only the rows with a target through the output layer; the plain loss makes the logits of every token.
Printed: time per step of each, their ratio, and the share of tokens that have a target.
"""

from __future__ import annotations

import copy
import statistics
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from train_step import run_ftexp, setup  # noqa: E402  (the same timing harness as the loop benchmark)


def smollm2_shaped(layers: int, lora: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                         num_hidden_layers=layers, num_attention_heads=9, num_key_value_heads=3,
                                         tie_word_embeddings=True, attn_implementation="sdpa"))
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    return model


def main() -> None:
    args, cfg, _, batches, origin, _ = setup(__doc__.splitlines()[0], steps=12, warmup=2, repeats=2,
                                             extra=[("--layers", 30), ("--full", False)],
                                             overrides=["model.train_on_prompt=false"])  # as hub models train
    base = smollm2_shaped(args.layers, lora=not args.full)
    gpu = torch.cuda.is_available()
    where = {"accelerator": "gpu", "precision": "bf16-mixed"} if gpu else {}
    timed = batches[args.warmup:]
    targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in timed)
    tokens = sum(int(b["attention_mask"].sum()) for b in timed)
    print(f"SmolLM2-135M shape, {args.layers} layers ({sum(p.numel() for p in base.parameters()) / 1e6:.0f} M "
          f"parameters), {'full fine-tuning' if args.full else 'LoRA r16'}, {origin}, batch {args.batch_size}, "
          f"{args.steps} steps ({args.warmup} warm-up), {torch.cuda.get_device_name() if gpu else 'CPU'}, "
          f"torch threads {torch.get_num_threads()}; "
          f"{targets / tokens:.1%} of real tokens have a target")
    times = {False: [], True: []}
    for r in range(args.repeats):
        for fused in (False, True) if r % 2 == 0 else (True, False):
            times[fused].append(run_ftexp(copy.deepcopy(base), batches, cfg.optim, cfg.optim.lr, args.warmup,
                                          fused_loss=fused, **where))
    plain, fused = statistics.median(times[False]), statistics.median(times[True])
    per_step = tokens / len(timed)
    print(f"plain loss : {plain * 1e3:8.1f} ms/step  {per_step / plain:7.0f} tok/s")
    print(f"fused loss : {fused * 1e3:8.1f} ms/step  {per_step / fused:7.0f} tok/s")
    print(f"ratio fused/plain (time per step): {fused / plain:.3f}")


if __name__ == "__main__":
    main()
