"""Value checks that types alone cannot express (ranges, combinations), run at composition time."""

from __future__ import annotations

import dataclasses
from typing import Any, List, Tuple

from omegaconf import DictConfig, ListConfig, OmegaConf

from ftexp.config.report_schema import report_problems

ADAMW_IMPLEMENTATIONS = ("auto", "fused", "foreach", "for_loop", "compiled")


def problems(cfg: DictConfig) -> List[str]:
    """Every value problem of a composed config, each naming its key and value."""
    out: List[str] = []

    def need(ok: bool, key: str, value: Any, rule: str) -> None:
        if not ok:
            out.append(f"{key}={value!r}: {rule}")

    t, o, m, d = cfg.trainer, cfg.optim, cfg.model, cfg.data
    devices = t.devices
    need(
        (isinstance(devices, int) and (devices >= 1 or devices == -1))
        or devices == "auto"
        or (isinstance(devices, (list, ListConfig)) and all(isinstance(x, int) and x >= 0 for x in devices)),
        "trainer.devices", devices, "must be a positive int, -1, 'auto' or a list of device ids",
    )
    need(t.max_epochs >= 1 or t.max_steps > 0, "trainer.max_epochs", t.max_epochs,
         "must be at least 1 (or set trainer.max_steps)")
    if t.strategy == "fsdp":
        need(t.accelerator in ("gpu", "cuda"), "trainer.accelerator", t.accelerator,
             "trainer.strategy=fsdp runs on GPUs only (Lightning's FSDP); use trainer=fsdp on a GPU node, or "
             "trainer=ddp_cpu to test data parallelism on a CPU")
        need(t.fsdp.sharding_strategy in ("FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD"),
             "trainer.fsdp.sharding_strategy", t.fsdp.sharding_strategy,
             "must be FULL_SHARD, SHARD_GRAD_OP, HYBRID_SHARD or NO_SHARD")
        sharded_off = {"ftexp.mitigation.ewc.EWC": "ewc", "ftexp.mitigation.lwf.LwF": "lwf"}
        name = sharded_off.get(cfg.mitigation.get("_target_"))
        need(name is None, "mitigation", name,
             "EWC's penalty and LwF's teacher need every parameter whole in each step, which FSDP shards; "
             "use trainer=ddp with this mitigation, or mitigation=replay with trainer=fsdp")
        need(t.early_stopping_patience is None, "trainer.early_stopping_patience", t.early_stopping_patience,
             "early stopping keeps a copy of the best weights, which FSDP shards; not supported with trainer=fsdp")
        need(not t.compile, "trainer.compile", True,
             "torch.compile cannot trace into the units of Lightning's FSDP (torch's FSDP v1 swaps each layer's "
             "flat parameter between its shard and the whole; dynamo fails at the first step, either scope); "
             "set trainer.compile=false with trainer=fsdp, or use trainer=ddp with compile")
    need(o.implementation in ADAMW_IMPLEMENTATIONS, "optim.implementation", o.implementation,
         f"must be one of {', '.join(ADAMW_IMPLEMENTATIONS)} (auto: fused on GPUs and CPUs, torch's default elsewhere)")
    need(o.implementation != "compiled" or t.master_weights, "optim.implementation", "compiled",
         "compiles the step of trainer.master_weights (the bf16 gradient's cast, clipping's factor, the fp32 "
         "update and the rounded write-back in one pass); set trainer.master_weights=true with "
         "trainer.precision=bf16-true, or optim.implementation=auto")
    if o.implementation == "fused" and t.gradient_clip_val:
        need(str(t.precision) not in ("16-mixed", "16"), "optim.implementation", "fused",
             f"with trainer.precision={t.precision!r} a fused AdamW unscales the fp16 gradients in its step, "
             "after they were clipped still scaled; set optim.implementation=auto (fused where it can be), "
             "trainer.precision=bf16-mixed, or trainer.gradient_clip_val=0")
    need(t.compile_scope in ("layers", "step"), "trainer.compile_scope", t.compile_scope,
         "must be 'layers' (each decoder layer compiled) or 'step' (the whole training forward)")
    if t.fused_loss:
        need(cfg.mitigation.get("_target_") != "ftexp.mitigation.lwf.LwF", "trainer.fused_loss", True,
             "mitigation=lwf distils from the student's full logits, which the fused loss never makes; "
             "set trainer.fused_loss=false with LwF")
        need(t.strategy != "fsdp", "trainer.fused_loss", True,
             "FSDP shards the output layer that the fused loss reads whole; set trainer.fused_loss=false with "
             "trainer=fsdp")
        need(not t.precision.startswith("16"), "trainer.fused_loss", True,
             f"with trainer.precision={t.precision!r} (fp16) the fused loss's gradients would underflow before the "
             "loss scale applies; use bf16-mixed or bf16-true, or set trainer.fused_loss=false")
    if t.master_weights:
        need(t.precision == "bf16-true", "trainer.master_weights", True,
             f"keeps fp32 copies of bf16 weights; it needs trainer.precision='bf16-true', not {t.precision!r} (the "
             "mixed and 32-bit precisions keep fp32 weights already; fp16 needs loss scaling)")
        need(not any(k in str(t.strategy) for k in ("fsdp", "deepspeed")), "trainer.master_weights", True,
             f"trainer.strategy={t.strategy!r} shards the weights that the fp32 copies mirror (or keeps its own); "
             "use it with trainer.master_weights=false, or master weights with trainer=ddp")
    impl = m.get("attn_implementation")
    if t.packing and impl not in (None, "sdpa", "eager"):
        from ftexp.models.attention import reads_position_ids

        need(reads_position_ids(str(impl)), "model.attn_implementation", impl,
             "trainer.packing needs attention that takes a 4-D mask (sdpa, eager) or reads example boundaries "
             "from position_ids (flash-attention kernels, flex_attention); turn packing off for this one")
    need(t.accumulate_grad_batches >= 1, "trainer.accumulate_grad_batches", t.accumulate_grad_batches, "must be >= 1")
    if t.pack_length is not None:
        need(bool(t.packing), "trainer.pack_length", t.pack_length,
             "sets the row length of packing, which is off: add trainer.packing=true (or drop pack_length)")
        need(t.pack_length >= m.max_length, "trainer.pack_length", t.pack_length,
             f"must be at least model.max_length ({m.max_length}) so that every example fits a packed row "
             "(null: model.max_length)")
    need(t.peak_tflops is None or t.peak_tflops > 0, "trainer.peak_tflops", t.peak_tflops,
         "must be > 0 (one device's peak bf16 TFLOP/s, for MFU) or null (looked up from the GPU's name)")
    need(t.checkpoint_every_n_steps is None or t.checkpoint_every_n_steps >= 1, "trainer.checkpoint_every_n_steps",
         t.checkpoint_every_n_steps, "must be >= 1 (or null: checkpoints at epoch ends only)")
    need(o.lr > 0, "optim.lr", o.lr, "must be > 0")
    need(o.batch_size >= 1, "optim.batch_size", o.batch_size, "must be >= 1")
    need(0 <= o.warmup_ratio < 1, "optim.warmup_ratio", o.warmup_ratio, "must be in [0, 1)")
    need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", list(o.betas),
         "must be two numbers in [0, 1)")
    need(m.max_length >= 8, "model.max_length", m.max_length, "must be >= 8")
    if "source" in m:  # a pretrained model: where its weights come from
        out += weight_source_problems(m)
    need(d.path is not None or not OmegaConf.is_interpolation(d, "name"), "data.path", None,
         "data=own is named after and reads the folder data.path: set it to the folder that holds your files")
    need(0 <= d.val_fraction < 1, "data.val_fraction", d.val_fraction, "must be in [0, 1)")
    need(d.n_train is None or d.n_train >= 1, "data.n_train", d.n_train, "must be >= 1 (or null for all)")
    need(d.n_test is None or d.n_test >= 1, "data.n_test", d.n_test, "must be >= 1 (or null for all)")
    need(d.n_val is None or d.n_val >= 1, "data.n_val", d.n_val, "must be >= 1 (or null for all)")
    need(d.weight >= 0, "data.weight", d.weight, "must be >= 0")
    for i, src in enumerate(d.extra_sources):
        need(src.weight >= 0, f"data.extra_sources[{i}].weight", src.weight, "must be >= 0")
    syn = d.synthetic
    need(0 <= syn.share <= 0.9, "data.synthetic.share", syn.share, "must be in [0, 0.9]")
    need(syn.n is None or syn.n >= 0, "data.synthetic.n", syn.n, "must be >= 0 (or null to use share)")
    need(syn.method in ("model", "augment"), "data.synthetic.method", syn.method, "must be 'model' or 'augment'")
    need(syn.temperature > 0, "data.synthetic.temperature", syn.temperature, "must be > 0")
    need(0 < syn.top_p <= 1, "data.synthetic.top_p", syn.top_p, "must be in (0, 1]")
    need(syn.oversample >= 1, "data.synthetic.oversample", syn.oversample, "must be >= 1")
    need(0 <= d.checks.max_test_overlap <= 1, "data.checks.max_test_overlap", d.checks.max_test_overlap,
         "must be in [0, 1]")
    names = [s.name for s in cfg.stages]
    need(len(set(names)) == len(names), "stages", names, "stage names must be unique")
    for i, stage in enumerate(cfg.stages):
        if stage.lr is not None:
            need(stage.lr > 0, f"stages[{i}].lr", stage.lr, "must be > 0")
    out += report_problems(cfg.get("report") or {})
    from ftexp.utils.build import refusal, target_allowed

    extra = list(cfg.get("allowed_targets") or [])
    for key, target in targets(cfg):
        if not target_allowed(str(target), extra):
            out.append(f"{key}={target!r}: {refusal(str(target))}")
    return out


WEIGHT_SOURCES = ("auto", "path", "hub", "gguf")


def weight_source_problems(m: DictConfig) -> List[str]:
    """model.source names a source the model config has (a path, a GGUF)."""
    out: List[str] = []
    if m.source not in WEIGHT_SOURCES:
        out.append(f"model.source={m.source!r}: must be one of {', '.join(WEIGHT_SOURCES)} (auto: model.path if "
                   "set, else the hub, else the GGUF that model.gguf names)")
    elif m.source == "path" and not m.path:
        out.append("model.source='path': needs model.path, the folder holding config.json, the weights and the "
                   "tokenizer")
    elif m.source == "gguf" and not (m.gguf and m.gguf.files):
        out.append(f"model.source='gguf': model '{m.name}' names no GGUF file (model.gguf.files); use a model "
                   "config that ships one (e.g. model=smollm2_135m_instruct) or model.source=auto")
    if m.gguf:
        if m.gguf.sha256 is not None and not (len(m.gguf.sha256) == 64
                                               and all(c in "0123456789abcdef" for c in m.gguf.sha256)):
            out.append(f"model.gguf.sha256={m.gguf.sha256!r}: must be 64 lower-case hex digits (or null)")
    return out


def added_keys(node: DictConfig, prefix: str = "") -> List[str]:
    """Keys that no schema declares: Hydra lets ``+key=value`` (or a config file) add them to a typed
    node, where they would be silently ignored, so a misspelt ``+trainer.max_epoch=3`` is an error."""
    found: List[str] = []
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        declared = {f.name for f in dataclasses.fields(schema)}
        found += [f"{prefix}{k}" for k in node.keys() if k not in declared]
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            found += added_keys(child, f"{prefix}{key}.")
    return found


def leaves(node: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    """Every value of a config that is not a dict or a list, with its dotted key (``prefix`` ends in "."
    when given); as written: interpolations are not resolved."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False)
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
    if items is None:
        return [(prefix.rstrip("."), node)]
    return [leaf for key, value in items for leaf in leaves(value, f"{prefix}{key}.")]


def targets(node: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    """Every ``_target_`` of a config (as written: interpolations are not resolved), with its key."""
    return [(key, value) for key, value in leaves(node, prefix) if key.rpartition(".")[2] == "_target_"]
