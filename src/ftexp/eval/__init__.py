"""Evaluators score a model on tasks. They never import training or mitigation code."""

from ftexp.eval.base import EvalContext, Evaluator

__all__ = ["EvalContext", "Evaluator"]
