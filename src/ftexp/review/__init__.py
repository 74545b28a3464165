"""Human review of model outputs (``evaluator=human_review``, ``python -m ftexp.review import``).

- :mod:`~ftexp.review.export`: the evaluator that exports a seeded, stratified sample of the last
  row's outputs, plus every red-team output, for people to rate (CSV, JSONL, Label Studio);
- :mod:`~ftexp.review.ratings`: reads a filled ratings file back and validates it;
- :mod:`~ftexp.review.stats`: human means, agreement with the automated verdict (Cohen's kappa) and
  rank correlation with the automated scores (Spearman);
- :mod:`~ftexp.review.raters`: several raters: Krippendorff's alpha, disagreements, the combined verdict;
- :mod:`~ftexp.review.importer`: records them in the run's results.json;
- :mod:`~ftexp.review.serve` (``ftexp review serve``) with :mod:`~ftexp.review.sitting` and ``page.html``:
  a local review page for one rater, writing ``review/ratings-<rater>.jsonl`` after every answer.
"""

from ftexp.review.schema import ReviewError

__all__ = ["ReviewError"]
