"""The one training loss: cross-entropy of a target text given the prompt before it.

Every trainer states its examples as prompt bodies and target texts; the target goes after the
model's turn opens (``Backbone.wrap``), ends with what the caller asks (the end-of-turn text where
the model should learn to stop), and only its tokens are scored. The backbone is taken as it comes
(any object with the protocol's ``wrap``, ``encode`` and ``continuation_logits``): nothing here imports one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F


@dataclass
class AnswerLoss:
    """Per example: ``losses`` (B,) mean cross-entropy over its target tokens, ``tokens`` (B,) how
    many there are, ``first`` whether the target's first token is the model's argmax."""

    losses: torch.Tensor
    tokens: torch.Tensor
    first: list

    def mean(self) -> torch.Tensor:
        """The mean over examples (each example weighs the same)."""
        return self.losses.mean()

    def token_mean(self) -> torch.Tensor:
        """The mean over all target tokens of the batch (long targets weigh more)."""
        return (self.losses * self.tokens).sum() / self.tokens.sum()


def answer_prompts(backbone, bodies: Sequence[list], targets: Sequence[str], end: str = "") -> list[list]:
    """Each body in the chat template with the model's turn open, then ``target + end``."""
    return [backbone.wrap(body) + [target + end] for body, target in zip(bodies, targets)]


def target_logits(backbone, prompts: Sequence[list]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per prompt (whose last segment is the target text): the logits that predict the target's
    tokens, (T, vocab) float32, and those tokens (T,) (``Backbone.continuation_logits``, the same
    code ``Backbone.loglikelihood`` scores with). Gradients flow as the caller's context says."""
    return backbone.continuation_logits(prompts)


def prompt_size(prompt: list, image_tokens: int = 64) -> int:
    """A rough token count of a prompt (text at ~3 characters a token, embeddings by their rows),
    for grouping prompts of similar length."""
    size = 0
    for seg in prompt:
        if isinstance(seg, str):
            size += len(seg) // 3 + 1
        elif hasattr(seg, "embeds"):
            size += int(seg.embeds.shape[0])
        else:
            size += image_tokens
    return size


def answer_loss(backbone, prompts: Sequence[list], group: int = 0) -> AnswerLoss:
    """The cross-entropy of each prompt's last segment (see ``target_logits``). ``group`` > 0: run
    the prompts in length-sorted groups of that many (a batch is padded to its longest prompt, so
    mixing 2- and 16-shot prompts wastes most of the compute); the result, in the prompts' order, is
    the same as one batch's."""
    if group and len(prompts) > group:
        order = sorted(range(len(prompts)), key=lambda i: prompt_size(prompts[i]))
        parts = [(order[j:j + group], answer_loss(backbone, [prompts[i] for i in order[j:j + group]]))
                 for j in range(0, len(order), group)]
        where = {i: (p, n) for p, (idx, _) in enumerate(parts) for n, i in enumerate(idx)}
        losses = torch.stack([parts[where[i][0]][1].losses[where[i][1]] for i in range(len(prompts))])
        tokens = torch.stack([parts[where[i][0]][1].tokens[where[i][1]] for i in range(len(prompts))])
        first = [parts[where[i][0]][1].first[where[i][1]] for i in range(len(prompts))]
        return AnswerLoss(losses, tokens, first)
    pairs = target_logits(backbone, prompts)
    losses = torch.stack([F.cross_entropy(logits, labels) for logits, labels in pairs])
    tokens = torch.tensor([len(labels) for _, labels in pairs], dtype=losses.dtype, device=losses.device)
    first = [bool(logits[0].argmax() == labels[0]) for logits, labels in pairs]
    return AnswerLoss(losses, tokens, first)
