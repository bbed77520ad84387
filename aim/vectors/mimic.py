"""MimIC-style head shifts (Jiang et al., "Mimic In-Context Learning for Multimodal Tasks", CVPR 2025).

Attention over demonstrations D and the query's own keys splits exactly into
``(1 - mu) * Attn(q, K_Q, V_Q) + mu * Attn(q, K_D, V_D)`` with ``mu = Z_D / (Z_D + Z_Q)``, ``Z`` the
softmax normalisers. MimIC keeps the first term as the model computes it on the query alone and
learns the rest per head: a shift vector ``s`` standing in for the demonstrations' term, and
``log Z_D`` as a linear function of the query vector (``w . q + b``), so the magnitude
``mu = sigmoid(log Z_D - log Z_Q)`` depends on the query. Each head's output becomes
``Attn(q, K_Q, V_Q) + mu * s``.

The shift needs each head's queries and keys (after rotary embedding, the cached keys included), so
it is applied inside transformers' attention-function interface (``ALL_ATTENTION_FUNCTIONS``): while
attached, the function the model's configuration names is wrapped, and the wrapper adds the shift
for the attention modules of this backbone only. Any model whose attention goes through that
interface works (Llama, Mistral, Qwen2, Idefics2's text model, the pocket's SmolLM2).

With zero shifts every head's output is returned as computed, so the backbone answers exactly as
the zero-shot prompt does.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import torch
from torch import nn

from ..errors import BackboneError
from .config import VectorConfig
from .model import VectorModule


class HeadShifts(VectorModule):
    on_heads = True

    def __init__(self, config: VectorConfig):
        super().__init__(config)
        L, H, D = config.num_layers, config.num_heads, config.head_dim
        self.shifts = nn.Parameter(torch.randn(L, H, D) * 1e-3)  # MimIC's start
        self.log_z_weight = nn.Parameter(torch.randn(L, H, D) * 0.02)
        self.log_z_bias = nn.Parameter(torch.zeros(L, H))

    def shift_heads(self, layer: int, module, query, key, mask, scaling, out: torch.Tensor) -> torch.Tensor:
        """``out`` (batch, q_len, heads, head_dim), the heads' outputs on the prompt as it is, plus
        ``mu * shift``; query (batch, heads, q_len, head_dim), key (batch, kv_heads, k_len, head_dim)."""
        q, k = query.float(), key.float()
        if k.shape[1] != q.shape[1]:  # grouped-query attention: each key head serves several query heads
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        scores = torch.matmul(q, k.transpose(-2, -1)) * scaling  # (B, H, Tq, Tk)
        tq, tk = scores.shape[-2:]
        if mask is None:  # causal, the queries being the last tq positions
            allowed = torch.ones(tq, tk, dtype=torch.bool, device=scores.device).tril(tk - tq)
            scores = scores.masked_fill(~allowed, float("-inf"))
        elif mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask[..., :tk], float("-inf"))
        else:
            scores = scores + mask[..., :tk].float()
        log_z_query = torch.logsumexp(scores, dim=-1).transpose(1, 2)  # (B, Tq, H)
        log_z_demos = torch.einsum("bhtd,hd->bth", q, self.log_z_weight[layer].float()) + self.log_z_bias[layer].float()
        mu = torch.sigmoid(log_z_demos - log_z_query)[..., None]  # (B, Tq, H, 1)
        return (out.float() + mu * self.shifts[layer].float()).to(out.dtype)

    @contextlib.contextmanager
    def attached(self, backbone) -> Iterator[None]:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        attention = [layer.self_attn for layer in self.layers_of(backbone)]
        where = {id(a): i for i, a in enumerate(attention)}
        name = getattr(attention[0].config, "_attn_implementation", None) or "eager"
        eager = getattr(sys.modules[type(attention[0]).__module__], "eager_attention_forward", None)
        if eager is None and name == "eager":
            raise BackboneError(f"backbone {backbone.model_id}: its attention does not go through transformers' "
                                "attention interface; MimIC-style shifts need it")
        original = ALL_ATTENTION_FUNCTIONS.get_interface(name, eager)
        had_local = name in ALL_ATTENTION_FUNCTIONS._local_mapping
        previous = ALL_ATTENTION_FUNCTIONS._local_mapping.get(name)

        def wrapped(module, query, key, value, attention_mask, *args, **kwargs):
            out, weights = original(module, query, key, value, attention_mask, *args, **kwargs)
            layer = where.get(id(module))
            if layer is not None:
                scaling = kwargs.get("scaling") or getattr(module, "scaling", query.shape[-1] ** -0.5)
                out = self.shift_heads(layer, module, query, key, attention_mask, scaling, out)
            return out, weights

        ALL_ATTENTION_FUNCTIONS[name] = wrapped
        try:
            yield
        finally:
            if had_local:
                ALL_ATTENTION_FUNCTIONS[name] = previous
            else:
                del ALL_ATTENTION_FUNCTIONS[name]
