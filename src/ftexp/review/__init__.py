"""Human review of model outputs (``evaluator=human_review``, ``python -m ftexp.review import``).

- :mod:`~ftexp.review.export`: the evaluator that exports a seeded, stratified sample of the last
  row's outputs, plus every red-team output, for people to rate (CSV, JSONL, Label Studio);
- :mod:`~ftexp.review.ratings`: reads a filled ratings file back and validates it;
- :mod:`~ftexp.review.stats`: human means, agreement with the automated verdict (Cohen's kappa) and
  rank correlation with the automated scores (Spearman);
- :mod:`~ftexp.review.importer`: records them in the run's results.json.
"""

from ftexp.review.schema import ReviewError

__all__ = ["ReviewError"]
