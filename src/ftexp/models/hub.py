"""Pretrained models: a local folder of HF weights, the Hugging Face hub, or a GGUF a package ships.

``model.source=auto`` takes the first of these that the model config has and the machine can reach:
``model.path``; the hub (its local cache, or the network); the GGUF named by ``model.gguf``, dequantized
once into the cache (:mod:`ftexp.models.gguf`). Where the weights came from is recorded with every
result (:attr:`HubModel.provenance`), since a quantized copy is not the release it was made from.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional
from urllib.parse import urlparse

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ftexp.models import gguf
from ftexp.models.base import ModelLoadError, ModelSource, torch_dtype

log = logging.getLogger(__name__)

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@dataclass
class Weights:
    """Where from_pretrained reads the tokenizer and the weights, and what results.json says of it."""

    location: str  # a folder or a hub id
    kwargs: Dict[str, Any] = field(default_factory=dict)
    provenance: Dict[str, Any] = field(default_factory=dict)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers (HF_HUB_OFFLINE: no). Without network, transformers retries for
    most of a minute before it gives up; this asks once, briefly. Behind a proxy a direct connection
    says nothing, so the hub is taken to be reachable there."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return True
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_cached(hub_id: str, revision: Optional[str]) -> bool:
    """Whether the local hub cache holds the model's config (then from_pretrained can work offline)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    return isinstance(found, str)


class HubModel(ModelSource):
    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self._weights: Optional[Weights] = None

    @property
    def pretrained(self) -> bool:
        return not self.cfg.random_init

    @property
    def location(self) -> str:
        return self._weights.location if self._weights else (self.cfg.path or self.cfg.hub_id)

    @property
    def provenance(self) -> Dict[str, Any]:
        prov = dict(self._weights.provenance) if self._weights else {}
        if self.cfg.random_init:
            prov["random_init"] = "the architecture and tokenizer only: weights drawn at random (model.random_init)"
        return prov

    # ---------------------------------------------------------------------------- where from

    def resolve(self, cache_dir: Path) -> Weights:
        """Choose the weights' source once (see the module's docstring)."""
        if self._weights is None:
            self._weights = self._choose(Path(cache_dir))
            log.info("model '%s': weights from %s (%s)", self.cfg.name, self._weights.provenance["source"],
                     self._weights.location)
        return self._weights

    def _choose(self, cache_dir: Path) -> Weights:
        c = self.cfg
        if c.source == "path" or (c.source == "auto" and c.path):
            if not Path(c.path).is_dir():
                raise ModelLoadError(
                    f"model '{c.name}': model.path='{c.path}' is not a folder. Point it at a folder holding "
                    f"config.json, the weights and the tokenizer of {c.hub_id}.")
            return Weights(c.path, provenance={"source": "path", "path": str(Path(c.path).resolve())})
        has_gguf = bool(c.gguf and c.gguf.files)
        if c.source == "gguf":
            return self._from_gguf(cache_dir)
        cached = hub_cached(c.hub_id, c.revision)
        online = hub_reachable()
        if c.source == "hub" or online or cached or not has_gguf:
            kwargs = {"revision": c.revision} if c.revision else {}
            if cached and not online:
                kwargs["local_files_only"] = True  # (else transformers retries the network for a minute)
            return Weights(c.hub_id, kwargs, {"source": "hub", "hub_id": c.hub_id, "revision": c.revision,
                                              "offline_cache": bool(cached and not online)})
        log.info("model '%s': the hub cannot be reached and its cache has no copy of %s; using the GGUF of %s",
                 c.name, c.hub_id, ", ".join(f.package for f in c.gguf.files))
        return self._from_gguf(cache_dir)

    def _from_gguf(self, cache_dir: Path) -> Weights:
        folder, provenance = gguf.dequantized(self.cfg.gguf, cache_dir, self.cfg.name)
        return Weights(str(folder), provenance=provenance)

    def _explain(self, what: str, exc: Exception) -> ModelLoadError:
        c = self.cfg
        first = str(exc).splitlines()[0] if str(exc) else ""
        source = self._weights.provenance.get("source") if self._weights else "hub"
        if source == "path":
            return ModelLoadError(
                f"model '{c.name}': cannot load the {what} from model.path='{c.path}' ({type(exc).__name__}: "
                f"{first}). The folder must hold config.json, the weights "
                f"(*.safetensors) and the tokenizer files, as written by save_pretrained or `hf download {c.hub_id}`."
            )
        if source == "gguf":
            return ModelLoadError(
                f"model '{c.name}': cannot load the {what} dequantized from its GGUF in {self.location} "
                f"({type(exc).__name__}: {first}); delete that folder to have it made again.")
        fallback = " (or model.source=gguf for the GGUF this model config names)" if c.gguf else ""
        return ModelLoadError(
            f"model '{c.name}': cannot load the {what} of '{c.hub_id}' from the Hugging Face hub "
            f"({type(exc).__name__}: {first}). Without network access, "
            f"download it where you have network (`hf download {c.hub_id} --local-dir <folder>`) and run with "
            f"model.path=<folder>{fallback}; for a gated model, accept its licence on the hub and set HF_TOKEN."
        )

    # ---------------------------------------------------------------------------- loading

    def _common(self) -> dict:
        return {"trust_remote_code": self.cfg.trust_remote_code, **(self._weights.kwargs if self._weights else {})}

    def load_tokenizer(self, corpus: Callable[[], Iterable[str]], cache_dir: Path) -> PreTrainedTokenizerBase:
        self.resolve(cache_dir)
        if self.cfg.trust_remote_code:
            log.warning("model '%s': model.trust_remote_code=true: Python code shipped with %s will run in this "
                        "process; results.json records it (model.trust_remote_code)", self.cfg.name, self.location)
        try:
            tok = AutoTokenizer.from_pretrained(self.location, **self._common())
        except Exception as exc:  # noqa: BLE001 - hub, network and file errors all get the same advice
            raise self._explain("tokenizer", exc) from exc
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok

    def load_model(self, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
        return self._load(tokenizer, {})

    def load_quantized(self, tokenizer: PreTrainedTokenizerBase, four_bit: Any) -> PreTrainedModel:
        if self.cfg.random_init:
            return super().load_quantized(tokenizer, four_bit)
        return self._load(tokenizer, four_bit.load_kwargs())  # quantized layer by layer as the weights load

    def _load(self, tokenizer: PreTrainedTokenizerBase, extra: Dict[str, Any]) -> PreTrainedModel:
        if self._weights is None:
            raise ModelLoadError(f"model '{self.cfg.name}': load_tokenizer(…, cache_dir) chooses the weights' "
                                 "source and must come first")
        kw = self._common()
        if self.cfg.attn_implementation:
            kw["attn_implementation"] = self.cfg.attn_implementation
        try:
            if self.cfg.random_init:
                model = self._random(kw)
            else:
                model = AutoModelForCausalLM.from_pretrained(self.location, dtype=torch_dtype(self.cfg.dtype), **kw,
                                                             **extra)
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._explain("weights", exc) from exc
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model

    def _random(self, kw: Dict[str, Any]) -> PreTrainedModel:
        """The architecture with fresh weights; the init draws from a fork of torch's generator seeded by
        the run (as model=tiny's does), so the rest of the run's random stream is the same either way."""
        attn = kw.pop("attn_implementation", None)
        config = AutoConfig.from_pretrained(self.location, **kw)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed())
            model = AutoModelForCausalLM.from_config(config, attn_implementation=attn,
                                                     trust_remote_code=self.cfg.trust_remote_code)
        return model.to(torch_dtype(self.cfg.dtype))
