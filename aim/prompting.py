"""Prompt assembly for every method, on one code path up to the demonstrations.

| method | a query's prompt body |
|---|---|
| ``zero``  | query image + question |
| ``raw``   | k x (demo image + demo text), then the query |
| ``text``  | k x demo text, then the query |
| ``fused`` | k x fused tokens (``Virtual``), then the query |

Demonstrations come in prompt order: the retriever puts the most similar one last, nearest the
query. The backbone wraps every body in its chat template and left-pads the batch, so
``inputs_embeds`` (B, L, hidden), the attention mask and the position ids are the backbone's own.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .backbones.base import Backbone, Demo, PromptBatch, Segment, Virtual
from .errors import AimError
from .images import ImageLike

METHODS = ("zero", "raw", "text", "fused")


def prompt_body(backbone: Backbone, method: str, image: Optional[ImageLike], question: str,
                demos: Sequence[Demo] = (), fused: Sequence[torch.Tensor] = ()) -> list[Segment]:
    """One query's body. ``demos`` serve ``raw`` and ``text``; ``fused`` ((tokens, hidden) per
    demonstration) serves ``fused``."""
    if method == "zero":
        return backbone.query_body(image, question)
    if method == "raw":
        return backbone.raw_icl_body(demos, image, question)
    if method == "text":
        return backbone.text_icl_body(demos, image, question)
    if method == "fused":
        return [Virtual(f) for f in fused] + backbone.query_body(image, question)
    raise AimError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")


def assemble(backbone: Backbone, method: str, images: Sequence[Optional[ImageLike]], questions: Sequence[str],
             demos: Optional[Sequence[Sequence[Demo]]] = None,
             fused: Optional[Sequence[Sequence[torch.Tensor]]] = None) -> PromptBatch:
    """A batch of queries -> one left-padded ``PromptBatch`` (demos / fused: one list per query)."""
    n = len(questions)
    demos = demos if demos is not None else [()] * n
    fused = fused if fused is not None else [()] * n
    if method == "fused" and any(len(d) for d in demos) and not any(len(f) for f in fused):
        raise AimError("method 'fused' needs fused tokens (from a DemoBank or a Fuser), not raw demonstrations")
    bodies = [prompt_body(backbone, method, img, q, d, f) for img, q, d, f in zip(images, questions, demos, fused)]
    return backbone.encode(bodies)
