"""``python -m ftexp`` that sends itself SIGTERM in the middle of training batch B on rank R only
(``FTEXP_SIGTERM_AT=R:B``; run as a script, so that DDP's child ranks run it too). A scheduler's
signal reaches the ranks at moments of its own; this one lands at a known point of one rank's step,
before that step's collectives, where a rank that acts on it alone leaves the others waiting."""

import os
import signal
import sys

from ftexp.training.module import FineTuneModule

_step = FineTuneModule.training_step


def _step_then_signal(self, batch, batch_idx):
    rank, at = (int(x) for x in os.environ["FTEXP_SIGTERM_AT"].split(":"))
    if self.global_rank == rank and batch_idx == at:
        os.kill(os.getpid(), signal.SIGTERM)
    return _step(self, batch, batch_idx)


FineTuneModule.training_step = _step_then_signal

if __name__ == "__main__":
    from ftexp.cli import main

    main(sys.argv[1:])
