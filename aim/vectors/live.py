"""LIVE-style in-context vectors (Peng et al., "LIVE: Learnable In-Context Vector for Visual Question
Answering", NeurIPS 2024): one vector ``v_l`` (hidden,) and one weight ``alpha_l`` per decoder layer.
At every position, layer ``l``'s output ``h`` becomes ``h + alpha_l v_l`` rescaled to the norm of
``h`` (the published intervention keeps each state's norm). The vectors stand in for the k-shot
prompt: the query is answered zero-shot with them attached (``aim train vectors`` fits them).

With ``alpha * v = 0`` every layer's output is returned bit for bit (``h + 0 == h`` and the norm
ratio is exactly 1), so zero vectors answer exactly as the zero-shot prompt does.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import VectorConfig
from .hooks import replace_output
from .model import VectorModule


class LiveVectors(VectorModule):
    def __init__(self, config: VectorConfig):
        super().__init__(config)
        L, H = config.num_layers, config.hidden_size
        self.vectors = nn.Parameter(torch.randn(L, H) * config.init_std)
        self.alpha = nn.Parameter(torch.full((L,), float(config.alpha_init)))

    def shift(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, hidden) -> the same, shifted by layer ``layer``'s vector, norms kept."""
        h = hidden.float()
        shifted = h + (self.alpha[layer] * self.vectors[layer]).to(h.device)
        norm, new_norm = h.norm(dim=-1, keepdim=True), shifted.norm(dim=-1, keepdim=True)
        ratio = torch.where(new_norm > 0, norm / new_norm.clamp_min(torch.finfo(h.dtype).tiny), torch.ones_like(norm))
        return (shifted * ratio).to(hidden.dtype)

    def layer_hooks(self, layers: list) -> list:
        def hook_for(index: int):
            def hook(module, args, output):
                return replace_output(output, lambda h: self.shift(index, h))
            return hook
        return [hook_for(i) for i in range(len(layers))]
