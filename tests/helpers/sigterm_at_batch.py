"""``python -m ftexp`` that sends itself SIGTERM on rank R only: in the middle of training batch B
(``FTEXP_SIGTERM_AT=R:B``) or of the first validation batch (``R:val``). Run as a script, so that
DDP's child ranks run it too. A scheduler's signal reaches the ranks at moments of its own; this one
lands at a known point of one rank's work, before that step's collectives, where a rank that acts on
it alone leaves the others waiting."""

import os
import signal
import sys

from ftexp.training.module import FineTuneModule

_RANK, _AT = os.environ["FTEXP_SIGTERM_AT"].split(":")
_train_step, _val_step = FineTuneModule.training_step, FineTuneModule.validation_step


def _training_step(self, batch, batch_idx):
    if self.global_rank == int(_RANK) and _AT != "val" and batch_idx == int(_AT):
        os.kill(os.getpid(), signal.SIGTERM)
    return _train_step(self, batch, batch_idx)


def _validation_step(self, batch, batch_idx, *args):
    if self.global_rank == int(_RANK) and _AT == "val" and batch_idx == 0:
        os.kill(os.getpid(), signal.SIGTERM)
    return _val_step(self, batch, batch_idx, *args)


FineTuneModule.training_step, FineTuneModule.validation_step = _training_step, _validation_step

if __name__ == "__main__":
    from ftexp.cli import main

    main(sys.argv[1:])
