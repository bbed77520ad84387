"""Training the pocket backbone's connector, LLaVA stage-1 style: caption loss on the answer turn,
vision tower and LLM frozen, only the connector learns.

Captions come from the *training* splits only: easy-VQA scenes ("A blue circle.", colour and shape
read off the split's own questions) and Fashion-MNIST images ("A sneaker."). Vision features are
computed once and cached (the tower is frozen). Batches are drawn from a generator seeded by
(seed, step), so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..backbones.base import Virtual
from ..backbones.pocket import PocketBackbone
from ..data import easy_vqa, fashion_mnist
from ..pocket.assets import cache_dir
from ..pocket.connector import Connector, ConnectorConfig
from ..pocket.vision import VisionTower
from .loop import append_log, lr_at, plot_loss, resume_point, save_state, seed_everything

logger = logging.getLogger(__name__)

INSTRUCTIONS = [
    "Describe the image briefly.",
    "Write a short caption for this image.",
    "What does this picture show?",
    "Give a brief description of the image.",
    "Name what you see in this picture.",
    "Caption this image.",
]


@dataclass
class ConnectorTrainConfig:
    out: str = "runs/connector"
    steps: int = 600
    stop_after: Optional[int] = None  # end this run early (the schedule stays that of `steps`); resume later
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 30
    weight_decay: float = 0.0
    seed: int = 0
    image_size: int = 128
    easy_vqa_images: int = 4000
    fashion_per_class: int = 400
    val_examples: int = 96
    eval_every: int = 100
    save_every: int = 50
    log_every: int = 5


def caption_data(cfg: ConnectorTrainConfig) -> tuple[list[Image.Image], list[str]]:
    """Training images and their captions (training splits only)."""
    rng = np.random.default_rng(cfg.seed)
    images, captions = [], []
    scenes = easy_vqa.scene_captions("train")
    paths = easy_vqa.image_paths("train")
    ids = sorted(scenes)
    ids = [ids[i] for i in rng.permutation(len(ids))[: cfg.easy_vqa_images]]
    for img in ids:
        color, shape = scenes[img]
        images.append(Image.open(paths[img]).convert("RGB"))
        captions.append(f"A {color} {shape}.")
    arrays, labels = fashion_mnist.load_arrays("train")
    for cls in range(len(fashion_mnist.CLASSES)):
        where = np.flatnonzero(labels == cls)
        for i in rng.choice(where, size=min(cfg.fashion_per_class, len(where)), replace=False):
            images.append(Image.fromarray(arrays[i]).convert("RGB"))
            name = fashion_mnist.CLASSES[cls][0]
            captions.append(f"{'An' if name[0] in 'aeiou' else 'A'} {name}.")
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


def caption_loss(backbone: PocketBackbone, connector: Connector, feats: torch.Tensor, captions: list[str],
                 instructions: list[str]) -> torch.Tensor:
    """Mean cross-entropy of the caption tokens (and the end of turn) given image + instruction."""
    image_embeds = connector(feats.float())
    prompts = [backbone.wrap([Virtual(e), "\n" + ins]) + [cap + "<|im_end|>"]
               for e, ins, cap in zip(image_embeds, instructions, captions)]
    batch = backbone.encode(prompts, spans=True, chat=False)
    hidden = backbone.run(batch).last_hidden_state
    states, labels = [], []
    for i, spans in enumerate(batch.spans):
        start, end = spans[-1]
        states.append(hidden[i, start - 1:end - 1])
        labels.append(batch.input_ids[i, start:end])
    logits = backbone.lm_head(torch.cat(states)).float()
    return torch.nn.functional.cross_entropy(logits, torch.cat(labels))


def train_connector(cfg: ConnectorTrainConfig) -> str:
    """Train (or resume) a connector; returns the output folder holding the checkpoint."""
    os.makedirs(cfg.out, exist_ok=True)
    seed_everything(cfg.seed)
    images, captions = caption_data(cfg)
    key = f"captions-s{cfg.seed}-e{cfg.easy_vqa_images}-f{cfg.fashion_per_class}-{cfg.image_size}px"
    feats = vision_features(images, cfg.image_size, key)
    del images
    order = np.random.default_rng(cfg.seed + 1).permutation(len(captions))
    val, train = order[: cfg.val_examples], order[cfg.val_examples:]

    seed_everything(cfg.seed)  # the initial weights must not depend on whether features were cached
    connector = Connector(ConnectorConfig(image_size=cfg.image_size))
    backbone = PocketBackbone.from_pretrained(connector=connector)
    optim = torch.optim.AdamW(connector.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state_path, log_path = os.path.join(cfg.out, "state.pt"), os.path.join(cfg.out, "log.jsonl")
    state = resume_point(cfg.out)
    step, elapsed = state["step"], state["elapsed"]
    if step:
        connector.load_state_dict(state["connector"])
        optim.load_state_dict(state["optim"])
        logger.info("resuming %s at step %d", cfg.out, step)

    def validate() -> float:
        connector.eval()
        losses = []
        with torch.no_grad():
            for i in range(0, len(val), cfg.batch_size):
                idx = val[i:i + cfg.batch_size]
                ins = [INSTRUCTIONS[j % len(INSTRUCTIONS)] for j in idx]
                losses.append(float(caption_loss(backbone, connector, feats[idx], [captions[j] for j in idx], ins)))
        connector.train()
        return float(np.mean(losses))

    last = min(cfg.steps, cfg.stop_after or cfg.steps)
    bar = tqdm(total=last, initial=step, desc="train connector", unit="step")
    start_time = time.perf_counter() - elapsed
    while step < last:
        rng = np.random.default_rng([cfg.seed, step])
        idx = rng.choice(train, size=cfg.batch_size, replace=False)
        ins = [INSTRUCTIONS[k] for k in rng.integers(0, len(INSTRUCTIONS), size=cfg.batch_size)]
        for group in optim.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
        loss = caption_loss(backbone, connector, feats[idx], [captions[j] for j in idx], ins)
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(connector.parameters(), 1.0)
        optim.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        row = {"step": step, "loss": loss.item(), "lr": optim.param_groups[0]["lr"],
               "time": time.perf_counter() - start_time}
        if step % cfg.eval_every == 0 or step == last:
            row["val_loss"] = validate()
            logger.info("step %d: held-out caption loss %.3f", step, row["val_loss"])
        if step % cfg.log_every == 0 or "val_loss" in row:
            append_log(log_path, row)
        if step % cfg.save_every == 0 or step == last:
            save_state(state_path, connector=connector.state_dict(), optim=optim.state_dict(), step=step,
                       elapsed=time.perf_counter() - start_time)
    bar.close()
    connector.config.training = {
        "objective": "caption cross-entropy on the answer turn (LLaVA stage 1); vision tower and LLM frozen",
        "data": f"easy-VQA train scenes ({cfg.easy_vqa_images} images, captions 'A <colour> <shape>.') and "
                f"Fashion-MNIST train ({cfg.fashion_per_class} per class, captions 'A <class>.')",
        "config": dataclasses.asdict(cfg),
        "steps_done": step,
        "minutes": round((time.perf_counter() - start_time) / 60, 1),
    }
    connector.save_pretrained(cfg.out)
    plot_loss(log_path, os.path.join(cfg.out, "loss.png"), "pocket connector: caption loss")
    with open(os.path.join(cfg.out, "train_config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2, sort_keys=True)
    return cfg.out
