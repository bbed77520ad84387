"""A closed-form start for a residual linear fuser: least squares toward the demonstration's image.

A residual fuser's first m fused tokens are the demonstration's text embeddings plus a projection of
its hidden states. Before any gradient step, the projection is fitted by ridge regression so that
what it adds to token j is the demonstration's own image embeddings (as the LLM receives them)
pooled to m tokens, row j. The frozen LLM already reads images in that form, so the fitted fuser
carries the image where the LLM looks for it; training with the answer loss then refines it.

Why: on the pocket backbone, adding the image embeddings pooled to 4 onto the first 4 text tokens
of each demonstration (an oracle, no fuser) binds labels nearly as well as raw demonstrations,
while a zero-started projection trained on the answer loss stays at text-only level: the image
embeddings are ~30x larger than text embeddings, far from where gradient steps from zero reach.
docs/fuser-design.md has the figures.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..backbones.base import Backbone
from ..data.record import Demo
from ..errors import AimError
from .model import Fuser, pool_tokens

logger = logging.getLogger(__name__)


@torch.no_grad()
def align_fuser(backbone: Backbone, fuser: Fuser, demos: Sequence[Demo], ridge: float = 1e-5,
                batch_size: int = 32) -> dict:
    """Fit ``fuser``'s projection in closed form (see the module doc); returns fit statistics:
    rows used and R^2 of the fitted rows about their per-position mean."""
    cfg = fuser.config
    if cfg.kind != "linear" or not cfg.residual or cfg.residual_tokens is None:
        raise AimError("the aligned start needs a residual linear fuser with residual_tokens set "
                       f"(got kind={cfg.kind}, residual={cfg.residual}, residual_tokens={cfg.residual_tokens}); "
                       "use --align 0 for a zero start")
    demos = [d for d in demos if d.image is not None]
    if len(demos) < 2:
        raise AimError(f"the aligned start needs demonstrations with images; got {len(demos)}: train on data "
                       "with images, or pass --align 0 for a zero start")
    m = cfg.residual_tokens
    xs, ys, rows = [], [], []
    for start in tqdm(range(0, len(demos), batch_size), desc="align fuser", unit="batch", leave=False):
        chunk = demos[start:start + batch_size]
        states = backbone.read_demos(chunk, layer=cfg.layer)
        images = backbone.image_embeddings([d.image for d in chunk])
        for s, img in zip(states, images):
            x = fuser._prepare(s.hidden).float()
            n = fuser._written(x)
            xs.append(x[:n])
            ys.append(pool_tokens(img.float(), m)[:n])
            rows.append(torch.arange(n))
    x, y, rows = torch.cat(xs).double(), torch.cat(ys).double(), torch.cat(rows)
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)  # the bias column
    gram = x.T @ x
    gram += ridge * len(x) * torch.eye(gram.shape[0], dtype=gram.dtype)
    w = torch.linalg.solve(gram, x.T @ y)
    param = fuser.proj.weight
    fuser.proj.weight.copy_(w[:-1].T.to(param))
    fuser.proj.bias.copy_(w[-1].to(param))
    residual = y - x @ w
    centred = torch.cat([y[rows == j] - y[rows == j].mean(0) for j in range(m) if (rows == j).any()])
    r2 = float(1 - residual.pow(2).sum() / centred.pow(2).sum())
    stats = {"align_demos": len(demos), "align_rows": len(x), "align_r2": round(r2, 4),
             "align_target_norm": round(float(y.norm(dim=1).mean()), 3)}
    logger.info("aligned fuser on %d demonstrations (%d rows): R^2 %.3f about the per-position mean",
                len(demos), len(x), r2)
    return stats
