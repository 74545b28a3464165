"""A byte-level BPE tokenizer trained offline on the run's training texts, cached by content hash."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Iterable

import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from ftexp.utils.cache import file_lock, read_entry
from ftexp.utils.io import publish_dir

# GPT-2's word split, except that "_" counts as a letter: snake_case identifiers such as class
# labels ("card_arrival") stay one word, so BPE can learn them as single tokens.
WORDS = Regex(r" ?[\p{L}\p{N}_]+| ?[^\s\p{L}\p{N}_]+|\s+")
SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


log = logging.getLogger(__name__)

def _fingerprint(texts: list[str], vocab_size: int) -> str:
    h = hashlib.sha256()
    h.update(f"bpe-v2|{tokenizers.__version__}|{vocab_size}|".encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:20]


def _train(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(WORDS, behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL["bos_token"]
    # Like Llama/Mistral tokenizers: a BOS token in front when special tokens are added.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


def _load(folder: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def bpe_tokenizer(texts: Iterable[str], vocab_size: int, cache_dir: Path) -> PreTrainedTokenizerFast:
    """Train (or load from ``cache_dir``) a byte-level BPE tokenizer on ``texts``.

    The cache key hashes the texts, the vocabulary size and the tokenizers version, so jobs of a
    sweep that train on the same texts share one tokenizer; concurrent jobs take a lock, so one
    trains it and the others wait, and it is published with an atomic rename. An entry that does not
    load (a damaged file) is trained again.
    """
    texts = list(texts)
    folder = Path(cache_dir) / "tokenizers" / _fingerprint(texts, vocab_size)
    with file_lock(folder.with_suffix(".lock")):  # parallel jobs: one trains, the others wait and reuse
        tokenizer = read_entry(folder, lambda: _load(folder))
        reused = tokenizer is not None
        if not reused:
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
            _train(texts, vocab_size).save_pretrained(tmp)
            tokenizer = _load(publish_dir(tmp, folder))
    log.info("tokenizer: %s %s", "reused" if reused else "trained and cached", folder)
    tokenizer.cache_info = {"path": str(folder), "reused": reused}  # results.json says which jobs trained it
    return tokenizer
