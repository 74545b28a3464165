"""``python -m ftexp`` with ``trainer=fsdp`` on CPU processes over gloo, for tests (run as a script;
Lightning's launcher starts the other ranks by running this file again).

Lightning runs FSDP on GPUs only and ftexp refuses ``trainer=fsdp`` on a CPU for that reason; here that
refusal is lifted, and Lightning's FSDP strategy wraps the model with torch's FSDP on the CPU
(``device_id=cpu``, which Lightning does not pass), so the rest of the strategy, ftexp's module and its
stage loop run as on GPUs. Lightning gathers full checkpoints with ``offload_to_cpu``, which crashes
torch's FSDP when the shards are on the CPU already: here without it.
"""

import sys

import pytorch_lightning.strategies as strategies
import pytorch_lightning.strategies.fsdp as lightning_fsdp
import torch
from pytorch_lightning.strategies import FSDPStrategy
from torch.distributed.fsdp import FullyShardedDataParallel

import ftexp.config.validate as validate


class CPUFSDPStrategy(FSDPStrategy):
    def __init__(self, **kwargs):
        super().__init__(process_group_backend="gloo", **kwargs)

    def _setup_model(self, model):
        model = FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload,
                                         mixed_precision=self.mixed_precision_config,
                                         sharding_strategy=self.sharding_strategy, device_id=torch.device("cpu"),
                                         **self.kwargs)
        return super()._setup_model(model)  # already wrapped: Lightning adds what it adds around it


def _full_state_dict_context(module, world_size: int, rank0_only: bool = True):
    """Lightning's, without ``offload_to_cpu``: the shards are on the CPU already."""
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp.api import FullOptimStateDictConfig

    return FullyShardedDataParallel.state_dict_type(
        module=module, state_dict_type=StateDictType.FULL_STATE_DICT,
        state_dict_config=FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
        optim_state_dict_config=FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only))


strategies.FSDPStrategy = CPUFSDPStrategy  # what ftexp.training.fsdp.strategy builds
lightning_fsdp._get_full_state_dict_context = _full_state_dict_context
_problems = validate.problems
validate.problems = lambda cfg: [p for p in _problems(cfg) if "runs on GPUs only" not in p]

if __name__ == "__main__":
    from ftexp.cli import main

    main(sys.argv[1:])
