"""Devices: the one a process works on, and per-device figures looked up by device name (hourly prices
for efficiency, peak FLOP/s for MFU)."""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional

# Dense bf16 tensor-core peak per device, TFLOP/s, from the vendors' data sheets (SXM parts unless
# named). MFU is measured against this; trainer.peak_tflops overrides it (e.g. a measured matmul peak).
PEAK_BF16_TFLOPS: Mapping[str, float] = {
    "H100": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H200": 989.0, "H200 NVL": 835.0, "GH200": 989.0, "B200": 2250.0,
    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "MI300X": 1307.0,
}


def lookup(device_name: str, table: Mapping[str, float]) -> Optional[float]:
    """The value of the longest key found in ``device_name`` (case-insensitive), matched as a whole
    name: "L4" matches "NVIDIA L4" but not "NVIDIA L40S", "H200" not "GH200". None when no key matches."""
    name = device_name.lower()
    found = [k for k in table if re.search(rf"(?<![a-z0-9]){re.escape(k.lower())}(?![a-z0-9])", name)]
    return float(table[max(found, key=len)]) if found else None


def process_device(trainer_cfg: Any) -> Any:
    """The device this process evaluates on (and, before training, writes synthetic data on): its own
    GPU when the trainer runs on GPUs, else the CPU."""
    import torch

    if trainer_cfg.accelerator in ("gpu", "cuda") or (trainer_cfg.accelerator == "auto" and torch.cuda.is_available()):
        # LOCAL_RANK: Lightning's launcher or torchrun; SLURM_LOCALID: ranks that srun started (Lightning
        # gives those no LOCAL_RANK). Before training (synthetic data) every rank needs its own GPU.
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0))))
    return torch.device("cpu")
