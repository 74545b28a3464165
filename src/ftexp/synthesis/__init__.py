"""Synthetic training examples: how many, written by whom, filtered how, cached where.

:func:`add_synthetic` adds exactly the configured number of synthetic examples to a task's training
split (validation and test stay real), per label in proportion to the real subset, and records what
it requested, generated and dropped in ``task.report["synthetic"]``. A :class:`SyntheticWriter`
writes the texts: the one ``data.synthetic.method`` names (model, augment), or a class of one's own
named by ``data.synthetic._target_``. Sample *k* of a label is fixed by its own seed, so a pool of
generated texts can be cached and extended and still give exactly what a fresh run would.

Imports data, models and training; nothing imports it but the orchestrator.
"""

from ftexp.synthesis.add import add_synthetic, fill
from ftexp.synthesis.pool import Pool
from ftexp.synthesis.writer import Requests, SynthesisInputs, SyntheticWriter

__all__ = ["Pool", "Requests", "SynthesisInputs", "SyntheticWriter", "add_synthetic", "fill"]
