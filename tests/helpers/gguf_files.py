"""Tiny GGUF files and fake installed distributions that ship them, for tests of the offline path.

The file is a one-layer Llama with a byte-level BPE vocabulary of ~100 tokens and a ChatML template,
written with the `gguf` package the way llama.cpp writes real ones, so transformers' GGUF loader reads
it exactly as it reads SmolLM2's (in about a second instead of a minute).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_tiny_gguf(path: Path, seed: int = 0, hidden: int = 32, ffn: int = 64, heads: int = 2, kv: int = 1) -> Path:
    import gguf

    rng = np.random.default_rng(seed)
    printable = [chr(c) for c in range(33, 127)]  # byte-level BPE shows these bytes as themselves
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *printable, "Ġ", "Ġt", "Ġth", "Ġthe", "Ċ"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("ftexp test model")
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_merges(["Ġ t", "Ġt h", "Ġth e"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_unk_token_id(0)
    w.add_chat_template(CHATML)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    w.add_tensor("token_embd.weight", weight(len(tokens), hidden))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("blk.0.attn_q.weight", weight(hidden, hidden))
    w.add_tensor("blk.0.attn_k.weight", weight(hidden * kv // heads, hidden))
    w.add_tensor("blk.0.attn_v.weight", weight(hidden * kv // heads, hidden))
    w.add_tensor("blk.0.attn_output.weight", weight(hidden, hidden))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("blk.0.ffn_gate.weight", weight(ffn, hidden))
    w.add_tensor("blk.0.ffn_up.weight", weight(ffn, hidden))
    w.add_tensor("blk.0.ffn_down.weight", weight(hidden, ffn))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def install_fake_distribution(site: Path, name: str, files: Dict[str, bytes]) -> None:
    """A distribution ``name`` as pip would leave it in ``site``: its files and a dist-info whose RECORD
    lists them (importlib.metadata reads nothing else). Put ``site`` on sys.path to 'install' it."""
    module = name.replace("-", "_")
    info = site / f"{module}-0.1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    record: List[str] = []
    for rel, data in files.items():
        target = site / module / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        record.append(f"{module}/{rel},,")
    record += [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")
