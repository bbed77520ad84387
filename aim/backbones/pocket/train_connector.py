"""Stage 1 of the pocket backbone: its connector, trained LLaVA stage-1 style (``aim train connector``).

Caption loss on the answer turn, vision tower and LLM frozen, only the connector learns. Captions
come from the *training* splits only: easy-VQA scenes ("A blue circle.", colour and shape read off
the split's own questions) and Fashion-MNIST images ("A sneaker."). Vision features are computed
once and cached (the tower is frozen). The loop is the shared one (aim/training/loop.py).
"""
from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import torch
from accelerate.utils import set_seed
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ...cache import cache_dir
from ...data import easy_vqa, fashion_mnist
from ...training.log import plot_loss
from ...training.loop import fit, process_device
from ...training.loss import AnswerLoss, answer_loss, answer_prompts
from ..base import Virtual
from .config import ConnectorTrainConfig
from .connector import Connector, ConnectorConfig
from ...data.captions import fashion_caption, scene_caption
from .episodes import INSTRUCTIONS
from .model import PocketBackbone
from .vision import VisionTower

logger = logging.getLogger(__name__)


def caption_data(cfg: ConnectorTrainConfig) -> tuple[list[Image.Image], list[str]]:
    """Training images and their captions (training splits only)."""
    rng = np.random.default_rng(cfg.seed)
    images, captions = [], []
    scenes = easy_vqa.scene_captions("train")
    paths = easy_vqa.image_paths("train")
    ids = sorted(scenes)
    ids = [ids[i] for i in rng.permutation(len(ids))[: cfg.easy_vqa_images]]
    for img in ids:
        images.append(Image.open(paths[img]).convert("RGB"))
        captions.append(scene_caption(*scenes[img]))
    arrays, labels = fashion_mnist.load_arrays("train")
    for cls in range(len(fashion_mnist.CLASSES)):
        where = np.flatnonzero(labels == cls)
        for i in rng.choice(where, size=min(cfg.fashion_per_class, len(where)), replace=False):
            images.append(Image.fromarray(arrays[i]).convert("RGB"))
            captions.append(fashion_caption(fashion_mnist.CLASSES[cls][0]))
    return images, captions


def vision_features(images: list[Image.Image], image_size: int, key: str, batch: int = 64) -> torch.Tensor:
    """(N, 1280, s, s) float16 features of the frozen tower, cached under $AIM_CACHE/features."""
    path = os.path.join(cache_dir(), "features", f"{key}.safetensors")
    if os.path.isfile(path):
        return load_file(path)["features"]
    tower = VisionTower(image_size)
    out = []
    for i in tqdm(range(0, len(images), batch), desc="vision features", unit="batch"):
        out.append(tower(tower.preprocess(images[i:i + batch])).half())
    feats = torch.cat(out).contiguous()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({"features": feats}, path + ".tmp")
    os.replace(path + ".tmp", path)
    return feats


class CaptionModel(nn.Module):
    """The connector with the caption loss as its forward; an example is (feature row, instruction)."""

    def __init__(self, backbone: PocketBackbone, features: torch.Tensor, captions: list[str]):
        super().__init__()
        self.connector = backbone.connector
        object.__setattr__(self, "backbone", backbone)  # frozen, not a submodule
        self.features, self.captions = features, captions

    def forward(self, examples: list) -> AnswerLoss:
        rows = [r for r, _ in examples]
        embeds = self.connector(self.features[rows].to(self.connector.fc1.weight.device).float())
        bodies = [[Virtual(e), "\n" + ins] for e, (_, ins) in zip(embeds, examples)]
        bb = self.backbone
        return answer_loss(bb, answer_prompts(bb, bodies, [self.captions[r] for r in rows], end=bb.end_of_turn))


def train_connector(cfg: ConnectorTrainConfig) -> str:
    """Train (or resume) a connector; returns the output folder holding the checkpoint."""
    set_seed(cfg.seed)
    images, captions = caption_data(cfg)
    key = f"captions-s{cfg.seed}-e{cfg.easy_vqa_images}-f{cfg.fashion_per_class}-{cfg.image_size}px"
    features = vision_features(images, cfg.image_size, key)
    del images
    order = np.random.default_rng(cfg.seed + 1).permutation(len(captions))
    val_rows, train_rows = order[: cfg.val_examples], order[cfg.val_examples:]

    set_seed(cfg.seed)  # the initial weights must not depend on whether features were cached
    connector = Connector(ConnectorConfig(image_size=cfg.image_size))
    if cfg.init:  # a warm start: the MLP runs per feature-map cell, so any image size takes its weights
        connector.load_state_dict(Connector.from_pretrained(cfg.init).state_dict())
    device = process_device()
    backbone = PocketBackbone.from_pretrained(connector=connector, device=device)
    model = CaptionModel(backbone, features, captions)

    def draw(rng: np.random.Generator, n: int) -> list:
        rows = rng.choice(train_rows, size=n, replace=False)
        picks = rng.integers(0, len(INSTRUCTIONS), size=n)
        return [(int(r), INSTRUCTIONS[k]) for r, k in zip(rows, picks)]

    val = [(int(j), INSTRUCTIONS[j % len(INSTRUCTIONS)]) for j in val_rows]
    done = fit(cfg, model, [{"params": list(connector.parameters()), "lr": cfg.lr}], draw, val, device=device,
               desc="train connector", objective=AnswerLoss.token_mean)
    if done.accelerator.is_main_process:
        connector.config.training = {
            "objective": "caption cross-entropy on the answer turn (LLaVA stage 1); vision tower and LLM frozen",
            "init": cfg.init and os.path.basename(os.path.normpath(cfg.init)),
            "data": f"easy-VQA train scenes ({cfg.easy_vqa_images} images, captions 'A <colour> <shape>.') and "
                    f"Fashion-MNIST train ({cfg.fashion_per_class} per class, captions 'A <class>.')",
            "config": dataclasses.asdict(cfg),
            "steps_done": done.step,
            "minutes": done.minutes,
        }
        connector.save_pretrained(cfg.out)
        plot_loss(os.path.join(cfg.out, "log.jsonl"), os.path.join(cfg.out, "loss.png"),
                  "pocket connector: caption loss")
    return cfg.out
