"""``python -m ftexp`` that dies like a SIGKILL (``os._exit``, no clean-up) right after writing its
first Lightning checkpoint inside an epoch of stage ``FTEXP_KILL_STAGE`` (run as a script, for the
kill-and-resume tests). A kill timed from outside could land a moment late, after the epoch's own
checkpoint; this one is exactly where the test wants it."""

import os
import sys

from pytorch_lightning.callbacks import ModelCheckpoint

_save = ModelCheckpoint._save_checkpoint


def _save_then_die(self, trainer, filepath):
    _save(self, trainer, filepath)
    in_epoch = trainer.fit_loop.epoch_loop.batch_progress.current.processed < trainer.num_training_batches
    if in_epoch and f"stage{os.environ['FTEXP_KILL_STAGE']}" in str(filepath):
        os._exit(137)


ModelCheckpoint._save_checkpoint = _save_then_die

if __name__ == "__main__":
    from ftexp.cli import main

    main(sys.argv[1:])
