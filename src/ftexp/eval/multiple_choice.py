"""MC1, MC2 and length-normalised MC1 of multiple-choice questions, scored by log-likelihood.

Every choice is scored by the summed log-probability of its tokens after the prompt, as
lm-evaluation-harness scores ``output_type: multiple_choice`` (the choice is preceded by the task's
completion prefix and not closed with EOS). A question's choices — the MC1 list and the MC2 list,
each distinct text once — go through one tree-attention pass of
:func:`ftexp.eval.classification.label_logprobs`.

* MC1: the correct choice has the highest log-likelihood (lm-eval ``truthfulqa_mc1`` ``acc``).
* MC1_norm: the same with log-likelihoods divided by each choice's length in characters
  (lm-eval ``acc_norm``).
* MC2: the probability mass on the true choices, normalised over all MC2 choices (lm-eval
  ``truthfulqa_mc2``).

The MC1 choices are shown to the scorer in a seeded per-question order: TruthfulQA lists the
correct choice first, so a scorer that falls back to position (ties go to the first maximum) would
otherwise win. MC2 does not depend on order.
"""

from __future__ import annotations

from typing import Any, Dict, List

import torch

from ftexp.data.base import encode_prompt
from ftexp.data.mixture import derived_rng
from ftexp.eval.base import EvalContext, Evaluator, Output
from ftexp.eval.classification import label_logprobs, scoring_attention


def shuffled_order(seed: int, index: int, n: int) -> List[int]:
    """The order question ``index`` shows its ``n`` choices in: a permutation of range(n), the same
    for a (seed, index) whatever else was drawn before."""
    order = list(range(n))
    derived_rng(seed, "multiple_choice", index).shuffle(order)
    return order


def mc2_score(logliks: torch.Tensor, labels: List[int]) -> float:
    """Normalised probability of the true choices: sum exp(ll) over true / sum exp(ll) over all."""
    probs = torch.softmax(logliks.double(), dim=0)  # exp(ll) / sum exp(ll), without under/overflow
    return float(probs[torch.tensor(labels, dtype=torch.bool)].sum())


class MultipleChoiceEvaluator(Evaluator):
    """``evaluator=multiple_choice``."""

    def applies_to(self, task: Any) -> bool:
        return task.kind == "multiple_choice"

    @torch.inference_mode()
    def evaluate(self, model: torch.nn.Module, task: Any, ctx: EvalContext) -> Dict[str, float]:
        split = self.cfg.split
        examples = task.splits[split]
        slices = task.slices if split == "test" else {}
        red_team = task.red_team_indices() if split == "test" else set()
        outputs = ctx.outputs.setdefault(task.name, [])
        hits, hits_norm, mc2 = [], [], []
        was_training = model.training
        model.eval()
        try:
            with scoring_attention(model), self.track(task, ctx, len(examples), "questions") as work:
                for i, ex in enumerate(examples):
                    result = self.score_question(model, task, ex, i, ctx)
                    work.advance()
                    hits.append(result["mc1"])
                    hits_norm.append(result["mc1_norm"])
                    if "mc2" in result:
                        mc2.append(result["mc2"])
                    outputs.append(Output(
                        id=f"{task.name}/{split}/{i}", task=task.name, prompt=ex.prompt, output=result["chosen"],
                        reference=ex.completion, scores={k: result[k] for k in ("mc1", "mc2") if k in result},
                        auto_correct=bool(result["mc1"]), red_team=i in red_team,
                        slices=[name for name, idx in slices.items() if i in idx]))
        finally:
            model.train(was_training)

        out = {f"{split}/n": float(len(examples))}
        if examples:
            out[f"{split}/mc1"] = _mean(hits)
            out[f"{split}/mc1_norm"] = _mean(hits_norm)
        if mc2:
            out[f"{split}/mc2"] = _mean(mc2)
        for name, idx in slices.items():
            if idx:
                out[f"{split}/slice/{name}/mc1"] = _mean([hits[j] for j in idx])
                if mc2:
                    out[f"{split}/slice/{name}/mc2"] = _mean([mc2[j] for j in idx])
            out[f"{split}/slice/{name}/n"] = float(len(idx))
        return out

    def score_question(self, model: torch.nn.Module, task: Any, ex: Any, index: int,
                       ctx: EvalContext) -> Dict[str, Any]:
        """MC1 and MC1_norm hits (0/1), MC2 (when the example has MC2 data) and the chosen choice."""
        tokenizer = ctx.tokenizer
        choices = ex.meta["choices"]
        order = shuffled_order(self.cfg.shuffle_seed, index, len(choices))
        shown = [choices[j] for j in order]
        gold = order.index(ex.meta["answer_index"])
        mc2_choices = ex.meta.get("mc2_choices") or []
        texts = list(dict.fromkeys([*shown, *mc2_choices]))  # each distinct text scored once
        position = {text: k for k, text in enumerate(texts)}
        tokens = [tokenizer(task.completion_prefix + text, add_special_tokens=False)["input_ids"] for text in texts]
        keep = max(1, ctx.max_length - max(len(t) for t in tokens))  # cut the prompt from the left to fit
        prompt = encode_prompt(tokenizer, ex.prompt, task.chat_template)[-keep:]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # one prompt: never used
        logliks = label_logprobs(model, [prompt], tokens, pad_id)[0]

        ll = logliks[[position[text] for text in shown]]
        lengths = torch.tensor([float(len(text)) for text in shown])
        pred = int(ll.argmax())  # ties go to the first maximum, as numpy's argmax in lm-eval
        result: Dict[str, Any] = {"mc1": float(pred == gold), "mc1_norm": float(int((ll / lengths).argmax()) == gold),
                                  "chosen": shown[pred]}
        if mc2_choices:
            result["mc2"] = mc2_score(logliks[[position[text] for text in mc2_choices]], ex.meta["mc2_labels"])
        return result


def _mean(values: List[float]) -> float:
    return float(sum(values) / len(values))
