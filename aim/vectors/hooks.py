"""Where vectors act: the decoder layers of a backbone's LLM, found the same way for every family,
and forward hooks that are always removed.

A decoder layer returns its output hidden states, (batch, tokens, hidden), alone or first in a
tuple (older transformers); ``replace_output`` edits either form.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from ..errors import BackboneError


def decoder_layers(backbone) -> list[nn.Module]:
    """The LLM's decoder layers, in order: the last ``nn.ModuleList`` under ``backbone.decoder`` whose
    items have a ``self_attn`` and whose length is the text model's ``num_hidden_layers`` (vision
    towers and resamplers of the same model come earlier and have their own counts)."""
    decoder = backbone.decoder
    config = getattr(decoder, "config", None)
    config = getattr(config, "text_config", None) or config
    wanted = getattr(config, "num_hidden_layers", None)
    found = [m for m in decoder.modules()
             if isinstance(m, nn.ModuleList) and len(m) and all(hasattr(layer, "self_attn") for layer in m)]
    exact = [m for m in found if len(m) == wanted]
    if not (exact or found):
        raise BackboneError(f"backbone {backbone.model_id}: no decoder layers (a ModuleList of modules with "
                            "self_attn) found under its LLM; vector methods need a transformer decoder")
    return list((exact or found)[-1])


def replace_output(output, fn: Callable[[torch.Tensor], torch.Tensor]):
    """A layer's output with its hidden states replaced by ``fn(hidden)``."""
    if isinstance(output, tuple):
        return (fn(output[0]),) + tuple(output[1:])
    return fn(output)


def attention_heads(backbone) -> tuple[int, int]:
    """(heads, head_dim) of the LLM's attention: the text config's ``num_attention_heads``, and the
    input width of each layer's output projection (``self_attn.o_proj``) divided by it."""
    decoder = backbone.decoder
    config = getattr(decoder, "config", None)
    config = getattr(config, "text_config", None) or config
    heads = getattr(config, "num_attention_heads", None)
    proj = getattr(getattr(decoder_layers(backbone)[0], "self_attn", None), "o_proj", None)
    if not heads or proj is None or not hasattr(proj, "in_features"):
        raise BackboneError(f"backbone {backbone.model_id}: its attention has no o_proj (or no head count in its "
                            "config); head-level vector methods need one")
    return heads, proj.in_features // heads


def head_outputs(backbone) -> list[nn.Module]:
    """Per decoder layer, the attention's output projection, whose input is the heads' outputs side
    by side, (batch, tokens, heads * head_dim)."""
    return [layer.self_attn.o_proj for layer in decoder_layers(backbone)]


@contextlib.contextmanager
def forward_hooks(modules: Sequence[nn.Module], hooks: Sequence[Callable], pre: bool = False) -> Iterator[None]:
    """``register_forward_hook(hook)`` (``pre``: ``register_forward_pre_hook``) on each module for the
    duration of the block."""
    handles = [(m.register_forward_pre_hook(h) if pre else m.register_forward_hook(h)) for m, h in zip(modules, hooks)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
