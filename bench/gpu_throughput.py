"""GPU training throughput: ftexp (FineTuneModule under Lightning) against a plain PyTorch loop.

    python bench/gpu_throughput.py [--case lora7b full1b] [--steps 30] [--warmup 10] [--peak-tflops 788] [--compile]
    python bench/gpu_throughput.py --tiny       # CPU-sized shapes: checks the script itself, no GPU

(b) lora7b: Mistral-7B architecture, random bf16 weights, LoRA r16 on every linear layer (adapters
    in fp32, bf16 autocast: Lightning's ``bf16-mixed``; no dropout, so ftexp's training step skips peft's
    fp32 copies of the adapters' inputs, which the plain loop makes), batch 4 x 2048 tokens.
(c) full1b: Llama-3.2-1B architecture, full fine-tune in bf16 (Lightning's ``bf16-true``), batch
    8 x 2048 tokens.
Both sides get the same weights, random-token batches, AdamW and gradient clipping, in the same
process (ftexp's AdamW is fused on a GPU, its ``optim.implementation=auto``; the plain loop's is torch's
default); time per step is the median over steps after the warm-up (CUDA-synchronised). Printed per
case: card, tokens/s, MFU (4N + 2N_trainable FLOPs per token against the card's peak: --peak-tflops,
else the bf16 data-sheet figure by name), peak memory, and the ratio ftexp / plain (goal <= 1.05).
"ftexp+f" is ftexp with ``trainer.fused_loss=true`` (output layer and cross-entropy a chunk at a time),
"ftexp+m" ftexp in ``bf16-true`` with ``trainer.master_weights=true`` (bf16 compute, no autocast, the
optimizer on fp32 copies of the trained weights: bf16-mixed's numerics for the weights), "ftexp+mo" the
same with ``optim.implementation=compiled`` (the master-weight step compiled, its compilation in the warm-up).
--compile adds the sides under torch.compile, each compared with the plain loop's model compiled
whole: "ftexp+c" is ``trainer.compile=true`` (each decoder layer compiled), "ftexp+cs" with
``trainer.compile_scope=step`` (the training forward compiled whole); "ftexp+cf", "ftexp+cm" and
"ftexp+cmo" add the fused loss, master weights and the compiled master-weight step to "ftexp+c". The
compile time falls in the warm-up steps. MFU is against the card's bf16 matmul rate measured in the same
run (the data-sheet figure is printed beside it), or --peak-tflops.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List, Optional

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from ftexp.training.module import FineTuneModule, StepOptions
from ftexp.utils.devices import PEAK_BF16_TFLOPS, lookup

CASES = {
    "lora7b": dict(arch=(MistralConfig, MistralForCausalLM), batch=4, seq=2048, lora=16, precision="bf16-mixed",
                   shape=dict(vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                              num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                              sliding_window=None)),
    "full1b": dict(arch=(LlamaConfig, LlamaForCausalLM), batch=8, seq=2048, lora=0, precision="bf16-true",
                   shape=dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                              num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                              tie_word_embeddings=True)),
}
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256)
OPTIM = OmegaConf.create({"weight_decay": 0.0, "betas": [0.9, 0.95], "warmup_ratio": 0.0, "min_lr_ratio": 1.0})


def build(case: Dict, tiny: bool, device: torch.device) -> torch.nn.Module:
    config_cls, model_cls = case["arch"]
    shape = {**case["shape"], **(TINY if tiny else {})}
    torch.manual_seed(0)
    config = config_cls(**shape, attn_implementation="sdpa")
    with torch.device(device):
        model = model_cls(config).to(torch.bfloat16)
    if case["lora"]:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=case["lora"], lora_alpha=2 * case["lora"], lora_dropout=0.0,
                                                 target_modules="all-linear"))  # adapters in fp32 (peft's default)
    return model


def batches(vocab: int, n: int, batch: int, seq: int, device: torch.device) -> List[Dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(4, vocab, (batch, seq), generator=gen)
        out.append({"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
                    "labels": ids.to(device)})
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(model, data, precision: str, device, warmup: int, compile: bool = False,
               step_hook: Optional[Callable[[], None]] = None) -> List[float]:
    step_forward = torch.compile(model) if compile else model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    times = []
    for i, batch in enumerate(data):
        sync(device)
        t = time.perf_counter()
        with autocast:
            loss = step_forward(**batch, use_cache=False).loss  # as ftexp's step: no KV cache
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
        if step_hook:
            step_hook()
    return times


class StepTimes(pl.Callback):
    def __init__(self, warmup: int, device: torch.device, step_hook: Optional[Callable[[], None]] = None) -> None:
        self.warmup, self.device, self.times, self._t = warmup, device, [], 0.0
        self.step_hook = step_hook

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        sync(self.device)
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        sync(self.device)
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._t)
        if self.step_hook:
            self.step_hook()


def ftexp_loop(model, data, precision: str, device, warmup: int, compile: bool = False,
               fused_loss: bool = False, master_weights: bool = False, compile_scope: str = "layers",
               implementation: str = "auto", step_hook: Optional[Callable[[], None]] = None) -> List[float]:
    clock = StepTimes(warmup, device, step_hook)
    if master_weights:
        precision = "bf16-true"  # bf16 compute, the optimizer on fp32 copies
    trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_epochs=1,
                         precision=precision if device.type == "cuda" else "32-true", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         gradient_clip_val=1.0, callbacks=[clock], limit_val_batches=0)
    optim = OmegaConf.merge(OPTIM, {"implementation": implementation})
    trainer.fit(FineTuneModule(model, optim, lr=1e-5, step=StepOptions(compile, compile_scope, fused_loss,
                                                                         master_weights)),
                train_dataloaders=DataLoader(data, batch_size=None))
    return clock.times


def matmul_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """The card's bf16 matmul rate measured now (n^3 products after warm-up): the peak MFU is taken against."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def sides(compile: bool) -> List[tuple]:
    """(name, loop, compile, options); each ftexp side is timed against the plain side of its mode."""
    fused, master = {"fused_loss": True}, {"master_weights": True}
    master_compiled = {**master, "implementation": "compiled"}
    out = [("plain", plain_loop, False, {}), ("ftexp", ftexp_loop, False, {}), ("ftexp+f", ftexp_loop, False, fused),
           ("ftexp+m", ftexp_loop, False, master), ("ftexp+mo", ftexp_loop, False, master_compiled)]
    if compile:
        out += [("plain+c", plain_loop, True, {}), ("ftexp+c", ftexp_loop, True, {}),
                ("ftexp+cs", ftexp_loop, True, {"compile_scope": "step"}),
                ("ftexp+cf", ftexp_loop, True, fused), ("ftexp+cm", ftexp_loop, True, master),
                ("ftexp+cmo", ftexp_loop, True, master_compiled)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--peak-tflops", type=float, default=None, help="default: measured now on the GPU")
    ap.add_argument("--compile", action="store_true", help="also both sides under torch.compile")
    ap.add_argument("--sides", nargs="+", default=None, choices=[s[0] for s in sides(compile=True)],
                    help="only these sides, in this order (e.g. ftexp+c plain+c); compiled ones need --compile")
    ap.add_argument("--tiny", action="store_true", help="CPU-sized shapes, to check the script without a GPU")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    sheet = lookup(card, PEAK_BF16_TFLOPS)
    peak = args.peak_tflops or (matmul_tflops(device) if device.type == "cuda" else None)
    known = {s[0]: s for s in sides(args.compile)}
    if args.sides and set(args.sides) - set(known):
        ap.error(f"--sides {' '.join(sorted(set(args.sides) - set(known)))}: compiled sides need --compile")
    todo = [known[n] for n in args.sides] if args.sides else list(known.values())  # in the order given
    rows = []
    for name in args.case:
        case = CASES[name]
        b, s = (2, 64) if args.tiny else (case["batch"], case["seq"])
        for side, loop, compile, kwargs in todo:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            model = build(case, args.tiny, device)  # the same seeded weights for every side
            counts = (sum(p.numel() for p in model.parameters()),
                      sum(p.numel() for p in model.parameters() if p.requires_grad))
            data = batches(model.config.vocab_size, args.steps, b, s, device)
            try:
                times = loop(model, data, case["precision"], device, args.warmup, compile, **kwargs)
            except torch.cuda.OutOfMemoryError as e:  # one side out of memory: report it, measure the rest
                print(f"  {name} {side}: out of memory ({str(e).splitlines()[0]})", flush=True)
                del model, data
                continue
            tok_s = b * s / statistics.median(times)
            mfu = tok_s * (4 * counts[0] + 2 * counts[1]) / (peak * 1e12) if peak else float("nan")
            memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
            rows.append((name, side, compile, tok_s, mfu, memory))
            print(f"  {name} {side}: {tok_s:.0f} tok/s, MFU {mfu:.3f}, peak {memory:.1f} GB", flush=True)  # if cut short
            del model, data
    against = "given" if args.peak_tflops else "bf16 matmul now"
    print(f"card: {card}   MFU against {peak or 'unknown'} TFLOP/s ({against}; data sheet {sheet})   "
          f"steps {args.steps} ({args.warmup} warm-up)")
    print(f"{'case':8s} {'side':8s} {'tok/s':>10s} {'MFU':>6s} {'peak GB':>8s} {'ftexp/plain time':>17s}")
    plain = {(r[0], r[2]): r[3] for r in rows if r[1].startswith("plain")}
    for name, side, compile, tok_s, mfu, memory in rows:
        ratio = f"{plain[name, compile] / tok_s:.3f}" if side.startswith("ftexp") and (name, compile) in plain else ""
        print(f"{name:8s} {side:8s} {tok_s:10.0f} {mfu:6.3f} {memory:8.1f} {ratio:>17s}")


if __name__ == "__main__":
    main()
