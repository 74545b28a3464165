"""trainer.activation_checkpointing against none: activation memory and step time, same model, same batches.

    python bench/activation_checkpointing.py [--layers 8] [--hidden 256] [--seq 512] [--batch 8] [--steps 6]
                                             [--lora] [--repeats 3]

A Mistral-shaped model with random weights trains ``--steps`` AdamW steps on random tokens, once with
each layer checkpointed (ftexp's ``set_activation_checkpointing``, transformers' non-reentrant per-layer
checkpointing) and once without; the sides alternate and the median of ``--repeats`` is reported.
Memory: on a GPU the peak allocated memory of a step (``torch.cuda.max_memory_allocated``); on a CPU,
where no allocator keeps a peak, the bytes the training forward saves for the backward (autograd's
saved tensors, counted once each, parameters excluded) - the activation memory checkpointing trades
for compute. Ratios are checkpointed / plain: memory below 1 is the saving, time above 1 the cost.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import MistralConfig, MistralForCausalLM

from ftexp.training.activation_checkpointing import set_activation_checkpointing


def build(args) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=8000, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                        num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                        num_key_value_heads=max(1, args.hidden // 128), max_position_embeddings=args.seq)
    model = MistralForCausalLM(cfg)
    if args.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    return model.train()


def saved_bytes(model: torch.nn.Module, batch: torch.Tensor) -> int:
    """Bytes the forward keeps for the backward (each storage once; parameters are held anyway)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def measure(model: torch.nn.Module, batches, device: torch.device) -> tuple:
    """(seconds per step after the first, memory in bytes)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for batch in batches:
        start = time.perf_counter()
        model(input_ids=batch, labels=batch, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - start)
    memory = torch.cuda.max_memory_allocated() if device.type == "cuda" else saved_bytes(model, batches[0])
    return statistics.median(times[1:]), memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in (("layers", 8), ("hidden", 256), ("seq", 512), ("batch", 8), ("steps", 6), ("repeats", 3)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--lora", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(4, 8000, (args.batch, args.seq), generator=gen).to(device) for _ in range(args.steps)]
    results = {False: [], True: []}
    for r in range(args.repeats):
        for on in ((False, True) if r % 2 == 0 else (True, False)):
            model = build(args).to(device)
            set_activation_checkpointing(model, on)
            results[on].append(measure(model, batches, device))
            del model
    (t0, m0), (t1, m1) = ([statistics.median(x) for x in zip(*results[on])] for on in (False, True))
    what = "peak allocated" if device.type == "cuda" else "saved for backward"
    print(f"{device.type}: {args.layers} layers x {args.hidden} hidden, batch {args.batch} x {args.seq} tokens, "
          f"{'LoRA' if args.lora else 'full'}; median of {args.repeats}, threads {torch.get_num_threads()}")
    print(f"  memory ({what}): plain {m0 / 2**20:.1f} MiB, checkpointed {m1 / 2**20:.1f} MiB, ratio {m1 / m0:.3f}")
    print(f"  step time: plain {t0 * 1e3:.0f} ms, checkpointed {t1 * 1e3:.0f} ms, ratio {t1 / t0:.3f}")


if __name__ == "__main__":
    main()
