"""Pretrained models from the Hugging Face hub or a local folder of HF weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ftexp.models.base import ModelLoadError, ModelSource, torch_dtype

log = logging.getLogger(__name__)


class HubModel(ModelSource):
    @property
    def location(self) -> str:
        return self.cfg.path or self.cfg.hub_id

    def _explain(self, what: str, exc: Exception) -> ModelLoadError:
        c = self.cfg
        if c.path:
            return ModelLoadError(
                f"model '{c.name}': cannot load the {what} from model.path='{c.path}' ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). The folder must hold config.json, the weights "
                f"(*.safetensors) and the tokenizer files, as written by save_pretrained or `hf download {c.hub_id}`."
            )
        return ModelLoadError(
            f"model '{c.name}': cannot load the {what} of '{c.hub_id}' from the Hugging Face hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Without network access, "
            f"download it where you have network (`hf download {c.hub_id} --local-dir <folder>`) and run with "
            f"model.path=<folder>; for a gated model, accept its licence on the hub and set HF_TOKEN."
        )

    def _common(self) -> dict:
        kw = {"trust_remote_code": self.cfg.trust_remote_code}
        if self.cfg.revision and not self.cfg.path:
            kw["revision"] = self.cfg.revision
        return kw

    def load_tokenizer(self, corpus: Callable[[], Iterable[str]], cache_dir: Path) -> PreTrainedTokenizerBase:
        if self.cfg.path and not Path(self.cfg.path).is_dir():
            raise ModelLoadError(
                f"model '{self.cfg.name}': model.path='{self.cfg.path}' is not a folder. Point it at a folder "
                f"holding config.json, the weights and the tokenizer of {self.cfg.hub_id}."
            )
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
        kw = self._common()
        if self.cfg.attn_implementation:
            kw["attn_implementation"] = self.cfg.attn_implementation
        try:
            model = AutoModelForCausalLM.from_pretrained(self.location, dtype=torch_dtype(self.cfg.dtype), **kw)
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._explain("weights", exc) from exc
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model
