"""Accuracy and macro-F1, predicting the label with the highest log-likelihood given the prompt.

All candidate labels are scored in one forward pass per prompt batch, without re-encoding the
prompt per label: the sequence is the prompt followed by the labels' token trie (each distinct label
prefix once: Banking77's 77 labels take 371 tokens instead of 467), and a 4D attention mask lets each
trie token see the prompt and its own ancestors only (tree attention); position ids continue from the
prompt by depth. Labels are split into chunks so that the logits of one pass stay under
``max_logits`` elements, which bounds memory for large vocabularies. The prediction is therefore
always one of the labels.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Dict, List, Sequence

import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from ftexp.data.base import encode_completion, encode_prompt
from ftexp.eval.base import EvalContext, Evaluator, Output, model_device
from ftexp.models.attention import attention_implementation, use_attention
from ftexp.models.base import unwrap_adapter


def label_trie(labels: Sequence[List[int]]):
    """The labels' distinct proper prefixes as trie nodes (a label's last token is only predicted, never
    fed): each node's token, its parent node (-1: the prompt) and depth, and for each label the logit
    index after which each of its tokens is predicted (0: the prompt's last position, 1 + n: node n)."""
    node: Dict[tuple, int] = {}
    tokens: List[int] = []
    parent: List[int] = []
    depth: List[int] = []
    for label in labels:
        for k in range(1, len(label)):
            key = tuple(label[:k])
            if key not in node:
                node[key] = len(tokens)
                tokens.append(label[k - 1])
                parent.append(node.get(key[:-1], -1))
                depth.append(k - 1)
    steps = [[0] + [1 + node[tuple(label[:k])] for k in range(1, len(label))] for label in labels]
    return tokens, parent, depth, steps


def _prefixes(label: List[int]) -> set:
    """A label's proper prefixes: the trie nodes it needs."""
    return {tuple(label[:k]) for k in range(1, len(label))}


def trie_size(labels: Sequence[List[int]]) -> int:
    return len(set().union(*map(_prefixes, labels)))


def _tree_inputs(prompts: Sequence[List[int]], labels: Sequence[List[int]], pad_id: int, device):
    """Token ids, position ids and a boolean (B, 1, T, T) mask for prompts followed by the labels' trie,
    and each label's logit indices (see :func:`label_trie`)."""
    B, P = len(prompts), max(len(p) for p in prompts)
    block, parent, depth, steps = label_trie(labels)
    S, T = len(block), P + len(block)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    valid = torch.zeros((B, P), dtype=torch.bool)
    for b, p in enumerate(prompts):
        ids[b, P - len(p):P] = torch.tensor(p)
        valid[b, P - len(p):] = True
    ids[:, P:] = torch.tensor(block, dtype=torch.long)
    lengths = valid.sum(-1, keepdim=True)
    positions = torch.cat([(valid.cumsum(-1) - 1).clamp(min=0), lengths + torch.tensor(depth, dtype=torch.long)], 1)

    mask = torch.zeros((B, T, T), dtype=torch.bool)
    mask[:, :P, :P] = torch.tril(torch.ones(P, P, dtype=torch.bool)) & valid[:, None, :]
    mask[:, P:, :P] = valid[:, None, :]
    sees = torch.eye(S, dtype=torch.bool)  # a trie node sees itself and its ancestors
    for n, up in enumerate(parent):
        if up >= 0:
            sees[n] |= sees[up]  # parents come before their children
    mask[:, P:, P:] = sees
    mask |= torch.eye(T, dtype=torch.bool)  # padding rows see themselves, never an empty row
    return ids.to(device), positions.to(device), mask[:, None].to(device), steps


def label_chunks(labels: Sequence[List[int]], batch: int, vocab: int, max_logits: int, limit: int = 0):
    """Consecutive (start, end) label ranges whose logits (batch x trie tokens x vocab) fit ``max_logits``;
    at most ``limit`` labels per range when ``limit`` > 0."""
    ranges, start, seen = [], 0, set()
    for j, label in enumerate(labels):
        new = _prefixes(label) - seen
        over = batch * (1 + len(seen) + len(new)) * vocab > max_logits or (limit and j - start >= limit)
        if j > start and over:
            ranges.append((start, j))
            start, seen = j, set()
            new = _prefixes(label)
        seen |= new
    ranges.append((start, len(labels)))
    return ranges


@torch.inference_mode()
def label_logprobs(
    model: torch.nn.Module,
    prompts: Sequence[List[int]],
    labels: Sequence[List[int]],
    pad_id: int,
    label_chunk: int = 0,
    max_logits: int = 2**27,
) -> torch.Tensor:
    """log p(label | prompt) summed over each label's tokens: a (len(prompts), len(labels)) tensor.

    ``label_chunk`` > 0 caps the labels per forward pass; ``max_logits`` caps the logits' elements. Where
    one prompt's logits over every label fit ``max_logits``, fewer prompts go per pass rather than fewer
    labels: each chunk of labels would run the prompts through the model again (with a 49k vocabulary
    and 77 labels of ~4 tokens, chunking the labels of 64 prompts doubled the tokens computed).
    """
    device = model_device(model)
    impl = getattr(model.config, "_attn_implementation", "sdpa")
    if impl not in ("sdpa", "eager"):
        raise ValueError(f"label scoring needs a 4D attention mask: attn_implementation sdpa or eager, not {impl}")
    vocab = model.get_output_embeddings().weight.shape[0] if hasattr(model, "get_output_embeddings") else 1
    per_pass = max_logits // ((1 + trie_size(labels)) * vocab)
    if not label_chunk and 1 <= per_pass < len(prompts):
        return torch.cat([label_logprobs(model, prompts[i:i + per_pass], labels, pad_id, 0, max_logits)
                          for i in range(0, len(prompts), per_pass)])
    scores = torch.empty(len(prompts), len(labels))
    for start, end in label_chunks(labels, len(prompts), vocab, max_logits, label_chunk):
        chunk = labels[start:end]
        ids, positions, mask, steps = _tree_inputs(prompts, chunk, pad_id, device)
        S = ids.shape[1] - max(len(p) for p in prompts)
        if impl == "eager":  # eager attention adds the mask to the scores
            mask = torch.zeros(mask.shape, device=device).masked_fill(~mask, torch.finfo(torch.float32).min)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=S + 1).logits
        logp = torch.log_softmax(logits.float(), dim=-1)  # (B, S + 1, V); index 0 = after the prompt
        for j, (label, at) in enumerate(zip(chunk, steps)):
            index, target = torch.tensor(at, device=device), torch.tensor(label, device=device)
            scores[:, start + j] = logp[:, index, target].sum(-1).cpu()
    return scores


def scoring_attention(model: torch.nn.Module):
    """Tree scoring needs a custom 4D mask, which flash-attention kernels do not take: such a model
    runs on SDPA while scoring and switches back afterwards."""
    base = unwrap_adapter(model)
    keep = attention_implementation(base) in ("sdpa", "eager")
    return nullcontext() if keep else use_attention(model, "sdpa")


class ClassificationEvaluator(Evaluator):
    """``evaluator=classification``."""

    def applies_to(self, task: Any) -> bool:
        return task.kind == "classification"

    @torch.inference_mode()
    def predict(self, model: torch.nn.Module, examples: Sequence[Any], task: Any, ctx: EvalContext) -> torch.Tensor:
        """The index into ``task.labels`` of each example's most likely label."""
        tokenizer = ctx.tokenizer
        label_tokens = [encode_completion(tokenizer, label, task.completion_prefix) for label in task.labels]
        keep = max(1, ctx.max_length - max(len(t) for t in label_tokens))
        was_training = model.training
        model.eval()
        preds: List[torch.Tensor] = []
        try:
            with scoring_attention(model), self.track(task, ctx, len(examples), "examples") as work:
                for start in range(0, len(examples), self.cfg.batch_size):
                    batch = examples[start:start + self.cfg.batch_size]
                    prompts = [encode_prompt(tokenizer, ex.prompt, task.chat_template)[-keep:] for ex in batch]
                    scores = label_logprobs(model, prompts, label_tokens, tokenizer.pad_token_id,
                                            self.cfg.label_chunk, self.cfg.max_logits)
                    preds.append(scores.argmax(-1).cpu())
                    work.advance(len(batch))
        finally:
            model.train(was_training)
        return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)

    def evaluate(self, model: torch.nn.Module, task: Any, ctx: EvalContext) -> Dict[str, float]:
        split = self.cfg.split
        examples = task.splits[split]
        label_ids = {label: i for i, label in enumerate(task.labels)}
        pred = self.predict(model, examples, task, ctx)
        target = torch.tensor([label_ids[ex.label] for ex in examples])
        n = len(task.labels)
        out = {
            f"{split}/accuracy": float(multiclass_accuracy(pred, target, n, average="micro")),
            f"{split}/macro_f1": float(multiclass_f1_score(pred, target, n, average="macro")),
            f"{split}/n": float(len(examples)),
        }
        # Named slices of the test set (data.slices): accuracy only; macro-F1 over a slice's few
        # labels is not comparable with the whole set's.
        slices = self.slices(task)
        for name, idx in slices.items():
            if idx:
                hits = (pred[idx] == target[idx]).float()
                out[f"{split}/slice/{name}/accuracy"] = float(hits.mean())
            out[f"{split}/slice/{name}/n"] = float(len(idx))
        self.keep_outputs(model, task, ctx, pred, out)
        return out

    def slices(self, task: Any) -> Dict[str, List[int]]:
        """The named test slices (data.slices) scored beside the split: the test split's only."""
        return task.slices if self.cfg.split == "test" else {}

    def keep_outputs(self, model, task, ctx: EvalContext, pred: torch.Tensor, out: Dict[str, float]) -> None:
        """Each prediction as an :class:`Output` for review, and the red-team prompts' predictions."""
        examples = task.splits[self.cfg.split]
        member: Dict[int, List[str]] = {}
        for name, idx in self.slices(task).items():
            for i in idx:
                member.setdefault(i, []).append(name)
        red_slices = set(task.red_team_slices)
        outputs = ctx.outputs.setdefault(task.name, [])
        for i, ex in enumerate(examples):
            hit = task.labels[int(pred[i])] == ex.label
            outputs.append(Output(id=f"{task.name}/{self.cfg.split}/{i}", task=task.name, prompt=ex.prompt,
                                  output=task.labels[int(pred[i])], reference=ex.label, scores={"correct": float(hit)},
                                  auto_correct=hit, slices=member.get(i, []),
                                  red_team=bool(red_slices & set(member.get(i, [])))))
        if task.red_team:
            red = self.predict(model, task.red_team, task, ctx)
            for i, (ex, p) in enumerate(zip(task.red_team, red.tolist())):
                outputs.append(Output(id=f"{task.name}/red_team/{i}", task=task.name, prompt=ex.prompt,
                                      output=task.labels[p], red_team=True))
            out[f"{self.cfg.split}/red_team/n"] = float(len(task.red_team))
