"""``evaluator=generation``: answers decoded for question-answering tasks and scored against the
references with maintained metric code: ROUGE-1/2/L F1 from torchmetrics, BLEU from sacrebleu
(corpus BLEU, 0-100, its default 13a tokenisation), exact match after SQuAD-style normalisation,
and mean lengths in words. ROUGE is the mean of per-answer F1 scores (as torchmetrics reports it);
BLEU is corpus-level, per slice too. Red-team prompts of the task are answered as well; their
outputs go to human review and are counted apart from the scored test answers.
"""

from __future__ import annotations

import random
import re
import string
from typing import Any, Dict, List, Sequence

import sacrebleu
import torch
from torchmetrics.functional.text.rouge import rouge_score

from ftexp.data.base import Example, example_prompt
from ftexp.eval.base import EvalContext, Evaluator, Output
from ftexp.models.decoding import Decoding, generate_ids

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def normalise_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's exact-match rule)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def answer_scores(output: str, reference: str) -> Dict[str, float]:
    """Per-answer scores: ROUGE-1/2/L F1, sentence BLEU and exact match."""
    rouge = rouge_score(output, reference, rouge_keys=ROUGE_KEYS)
    scores = {key: float(rouge[f"{key}_fmeasure"]) for key in ROUGE_KEYS}
    scores["bleu"] = float(sacrebleu.sentence_bleu(output, [reference]).score)
    scores["exact_match"] = float(normalise_answer(output) == normalise_answer(reference))
    return scores


def corpus_metrics(outputs: Sequence[str], references: Sequence[str], per_answer: Sequence[Dict[str, float]],
                   prefix: str) -> Dict[str, float]:
    """Means of the per-answer ROUGE and exact match, corpus BLEU, lengths and the count."""
    n = len(outputs)
    out = {f"{prefix}/{key}": sum(s[key] for s in per_answer) / n for key in (*ROUGE_KEYS, "exact_match")}
    out[f"{prefix}/bleu"] = float(sacrebleu.corpus_bleu(list(outputs), [list(references)]).score)
    out[f"{prefix}/mean_length"] = sum(len(o.split()) for o in outputs) / n
    out[f"{prefix}/reference_mean_length"] = sum(len(r.split()) for r in references) / n
    out[f"{prefix}/n"] = float(n)
    return out


class GenerationEvaluator(Evaluator):
    def applies_to(self, task: Any) -> bool:
        return task.kind == "generation"

    @property
    def uses_seed(self) -> bool:
        return bool(self.cfg.do_sample)

    def answer(self, model: torch.nn.Module, examples: Sequence[Example], task: Any, ctx: EvalContext,
               first_id: int = 0) -> List[str]:
        """Decoded answers; sampled answer i uses seed (run seed, ``first_id`` + i), so an answer
        does not depend on the batch it was decoded in."""
        cfg, tokenizer = self.cfg, ctx.tokenizer
        keep = max(1, ctx.max_length - cfg.max_new_tokens)  # prompts cut from the left, as in training
        prompts = [example_prompt(tokenizer, ex, task.chat_template, task.completion_prefix)[-keep:] for ex in examples]
        seeds = None
        if cfg.do_sample:
            seeds = [hash_seed(ctx.seed, first_id + i) for i in range(len(examples))]
        how = Decoding(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, temperature=cfg.temperature,
                       top_p=cfg.top_p)
        with self.track(task, ctx, len(prompts), "answers") as work:
            new = generate_ids(model, tokenizer, prompts, how, seeds, progress=work.advance)
        return [text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]

    def evaluate(self, model: torch.nn.Module, task: Any, ctx: EvalContext) -> Dict[str, float]:
        split = self.cfg.split
        examples = task.splits[split]
        index = list(range(len(examples)))
        if self.cfg.n is not None and self.cfg.n < len(examples):
            index = sorted(random.Random(0).sample(index, self.cfg.n))  # seed 0: the same subset every run
        chosen = [examples[i] for i in index]
        answers = self.answer(model, chosen, task, ctx)
        references = [ex.completion for ex in chosen]
        per_answer = [answer_scores(o, r) for o, r in zip(answers, references)]
        metrics = corpus_metrics(answers, references, per_answer, split)

        slices = task.slices if split == "test" else {}
        position = {i: k for k, i in enumerate(index)}
        member: Dict[int, List[str]] = {}
        for name, idx in slices.items():
            at = [position[i] for i in idx if i in position]
            for k in at:
                member.setdefault(k, []).append(name)
            if at:
                sub = corpus_metrics([answers[k] for k in at], [references[k] for k in at],
                                     [per_answer[k] for k in at], f"{split}/slice/{name}")
                metrics.update({key: v for key, v in sub.items() if not key.endswith("reference_mean_length")})
            else:
                metrics[f"{split}/slice/{name}/n"] = 0.0

        red_slices = set(task.red_team_slices)
        outputs = ctx.outputs.setdefault(task.name, [])
        for k, (ex, answer, scores) in enumerate(zip(chosen, answers, per_answer)):
            outputs.append(Output(
                id=f"{task.name}/{split}/{index[k]}", task=task.name, prompt=ex.prompt, output=answer,
                reference=ex.completion, scores=scores, slices=member.get(k, []),
                auto_correct=bool(scores["exact_match"] or scores["rougeL"] >= self.cfg.pass_threshold),
                red_team=bool(red_slices & set(member.get(k, []))),
            ))
        if task.red_team:
            red_answers = self.answer(model, task.red_team, task, ctx, first_id=len(examples))
            for i, (ex, answer) in enumerate(zip(task.red_team, red_answers)):
                outputs.append(Output(id=f"{task.name}/red_team/{i}", task=task.name, prompt=ex.prompt,
                                      output=answer, red_team=True))
            metrics[f"{split}/red_team/n"] = float(len(red_answers))
            metrics[f"{split}/red_team/mean_length"] = sum(len(a.split()) for a in red_answers) / len(red_answers)
        return metrics


def hash_seed(seed: int, index: int) -> int:
    """A per-answer sampling seed from the run's seed and the answer's position."""
    return (seed * 1_000_003 + index) % (2**63 - 1)
