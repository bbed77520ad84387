"""MTV-style task vectors (Huang et al., "Multimodal Task Vectors Enable Many-Shot Multimodal
In-Context Learning", NeurIPS 2024). Training-free vectors, a searched choice of heads:

1. **Means**: the backbone reads ``mean_prompts`` prompts of ``shots`` raw demonstrations and a
   query; at the last prompt position (where the answer starts) each attention head's output (the
   input of ``o_proj``, split into heads) is recorded and averaged: ``means`` (layers, heads, head_dim).
2. **Which heads**: one Bernoulli per head, logits starting at -1; a REINFORCE step samples
   ``samples`` head choices for a zero-shot query, scores each by the cross-entropy of the answer's
   first token with the chosen heads patched, and raises the log-probability of the choices that did
   better than their mean (losses standardised). At the end, ``candidates`` choices drawn from the
   final distribution and its p > 0.5 choice are scored on held-out queries; the best is kept.
3. **Answering**: at every forward (the prompt, then each generated token), the chosen heads' outputs
   at the last position are replaced by their means; the query is shown alone.

With no head chosen the backbone is untouched, so it answers exactly as the zero-shot prompt does.
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..backbones.base import PromptBatch
from ..training.loss import AnswerLoss
from .config import VectorConfig
from .hooks import forward_hooks, head_outputs
from .model import VectorModule

logger = logging.getLogger(__name__)

EPS = 1e-3  # the Bernoulli probabilities stay within [EPS, 1 - EPS] during the search (as MTV's)


class TaskVectors(VectorModule):
    on_heads = True

    def __init__(self, config: VectorConfig):
        super().__init__(config)
        L, H, D = config.num_layers, config.num_heads, config.head_dim
        self.register_buffer("means", torch.zeros(L, H, D))
        self.register_buffer("chosen", torch.zeros(L, H))  # 1 where a head is patched
        self.logits = nn.Parameter(torch.full((L, H), -1.0))  # the head-choice distribution (MTV starts at -1)
        #: during the search: one choice per batch row, (batch, layers, heads); None: ``chosen`` for all rows
        self.row_choices: Optional[torch.Tensor] = None

    def probabilities(self) -> torch.Tensor:
        return torch.sigmoid(self.logits).clamp(EPS, 1 - EPS)

    def layer_hooks(self, layers: list) -> list:
        def hook_for(index: int):
            def hook(module, args):
                choice = self.row_choices[:, index] if self.row_choices is not None else self.chosen[index][None]
                if not choice.any():
                    return None  # nothing patched in this layer: its input as it is
                x = args[0]
                b, t, width = x.shape
                last = x[:, -1].reshape(b, self.config.num_heads, self.config.head_dim)
                m = choice.to(x.dtype)[..., None]
                patched = last * (1 - m) + self.means[index].to(x.dtype) * m
                x = torch.cat([x[:, :-1], patched.reshape(b, 1, width)], dim=1)
                return (x,) + tuple(args[1:])
            return hook
        return [hook_for(i) for i in range(len(layers))]


@torch.no_grad()
def mean_head_outputs(backbone, vectors: TaskVectors, sequences: list, batch_size: int = 4) -> torch.Tensor:
    """Each head's mean output at the last position of the raw many-shot prompts of ``sequences``
    (aim.training.sequences.TrainSequence): (layers, heads, head_dim), float32."""
    L, H, D = vectors.config.num_layers, vectors.config.num_heads, vectors.config.head_dim
    total = torch.zeros(L, H, D)
    seen = [0]

    def hook_for(index: int):
        def hook(module, args):
            last = args[0][:, -1].float().reshape(-1, H, D)
            total[index] += last.sum(0).cpu()
            if index == 0:
                seen[0] += last.shape[0]
        return hook

    modules = head_outputs(backbone)
    with forward_hooks(modules, [hook_for(i) for i in range(L)], pre=True):
        for s in tqdm(range(0, len(sequences), batch_size), desc="mtv: mean head outputs", unit="batch",
                      disable=len(sequences) <= batch_size):
            part = sequences[s:s + batch_size]
            backbone.run(backbone.encode([backbone.raw_icl_body(q.demos, q.image, q.question) for q in part]))
    return total / max(1, seen[0])


class HeadSearch(nn.Module):
    """The REINFORCE search over head choices, with its surrogate loss as the forward (what the shared
    loop trains; only ``vectors.logits`` has gradients). In eval mode the forward scores the
    distribution's p > 0.5 choice instead: the answer's first-token cross-entropy per query."""

    def __init__(self, backbone, vectors: TaskVectors, samples: int):
        super().__init__()
        self.vectors, self.samples = vectors, samples
        object.__setattr__(self, "backbone", backbone)

    def first_token_losses(self, seq, choices: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """The answer's first-token cross-entropy of the zero-shot query under each choice (rows)."""
        bb = self.backbone
        target = bb.tokenizer(bb.continuation_text(seq.target), add_special_tokens=False).input_ids[0]
        one = bb.encode([bb.query_body(seq.image, seq.question)])  # the image read once, the rows repeated
        n = len(choices)
        batch = PromptBatch(one.inputs_embeds.expand(n, -1, -1), one.attention_mask.expand(n, -1),
                            one.position_ids.expand(*one.position_ids.shape[:-2], n, -1), one.input_ids.expand(n, -1))
        self.vectors.row_choices = choices
        try:
            with self.vectors.attached(bb), torch.no_grad():
                logits = bb.next_token_logits(batch)
        finally:
            self.vectors.row_choices = None
        labels = torch.full((len(choices),), target, dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, labels, reduction="none"), bool(logits[0].argmax() == target)

    def forward(self, seqs: list) -> AnswerLoss:
        v = self.vectors
        losses, first = [], []
        for seq in seqs:
            if not self.training:
                ce, hit = self.first_token_losses(seq, (v.probabilities() > 0.5).float()[None])
                losses.append(ce[0])
                first.append(hit)
                continue
            dist = torch.distributions.Bernoulli(v.probabilities())
            choices = dist.sample((self.samples,))  # (samples, layers, heads)
            ce, hit = self.first_token_losses(seq, choices)
            reward = (ce - ce.mean()) / (ce.std() + EPS)  # lower loss than the others: pushed up
            losses.append((dist.log_prob(choices).sum((1, 2)) * reward).sum())
            first.append(hit)
        losses = torch.stack(losses)
        return AnswerLoss(losses, torch.ones_like(losses), first)


@torch.no_grad()
def pick_heads(search: HeadSearch, val: list, candidates: int, seed: int) -> dict:
    """Score the p > 0.5 choice and ``candidates`` draws from the final distribution on ``val``; set
    the best as ``chosen``. Returns what was found (for the checkpoint's record)."""
    v = search.vectors
    probs = v.probabilities()
    generator = torch.Generator(device=probs.device).manual_seed(seed)
    options = [(probs > 0.5).float()] + [torch.bernoulli(probs, generator=generator) for _ in range(candidates)]
    scores = []
    for choice in options:
        ce = torch.cat([search.first_token_losses(seq, choice[None])[0] for seq in val])
        scores.append(float(ce.mean()))
    best = int(np.argmin(scores))
    v.chosen.copy_(options[best])
    return {"heads_chosen": int(options[best].sum()), "of_heads": int(options[best].numel()),
            "held_out_first_token_loss": scores[best], "candidate_losses": scores}
