"""Stage 2 of the pocket backbone: interleaved image-text sequences teach the 135M LLM multimodal
in-context learning (as Flamingo and IDEFICS learned it from interleaved web documents).

The connector (from stage 1) and a LoRA on every projection of the LLM (``peft``) train on the
examples of ``episodes.py``: label binding with made-up words, easy-VQA question runs and captions,
all from training splits. The loss is the cross-entropy of the query's answer (and the end of turn)
given everything before it, prompts laid out exactly as the backbone lays out raw ICL. The loop is
the shared one (aim/training/loop.py). The output folder is a pocket checkpoint:
``connector_config.json`` + ``connector.safetensors`` and the peft adapter ``adapter_config.json`` +
``adapter_model.safetensors`` (merged into the LLM at load).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import warnings

import numpy as np
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch import nn

from ...training.log import plot_loss
from ...training.loop import fit, process_device
from ...training.loss import AnswerLoss, answer_loss, answer_prompts
from ..base import Demo, Virtual
from .assets import LLM_NAME
from .config import BackboneTrainConfig
from .connector import Connector
from .episodes import EpisodePool, Example
from .model import PocketBackbone
from .train_connector import vision_features

logger = logging.getLogger(__name__)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EXAMPLE_KINDS = ("binding", "vqa", "caption")


class EpisodeModel(nn.Module):
    """The trainable part (connector + LoRA-wrapped LLM) with the episode loss as its forward, so
    ``accelerate`` can wrap it (DDP) like any model."""

    def __init__(self, backbone: PocketBackbone, features: torch.Tensor):
        super().__init__()
        self.connector = backbone.connector
        self.llm = backbone.llm
        object.__setattr__(self, "backbone", backbone)  # not a submodule: it holds the two above
        self.features = features

    def prompts(self, examples: list[Example], image_embeds: dict[int, torch.Tensor]) -> list[list]:
        bb = self.backbone
        bodies = []
        for ex in examples:
            if ex.kind == "caption":
                bodies.append([Virtual(image_embeds[ex.image]), "\n" + ex.question])
                continue
            body = []
            for image, question, answer in ex.demos:
                body += [Virtual(image_embeds[image]), bb.demo_text(Demo(None, question, answer))]
            bodies.append(body + [Virtual(image_embeds[ex.image]), bb.query_text(ex.question)])
        return answer_prompts(bb, bodies, [" " + ex.target for ex in examples], end=bb.end_of_turn)

    def forward(self, examples: list[Example]) -> AnswerLoss:
        rows = sorted({ex.image for ex in examples} | {d[0] for ex in examples for d in ex.demos})
        embeds = self.connector(self.features[rows].to(self.connector.fc1.weight.device).float())
        return answer_loss(self.backbone, self.prompts(examples, dict(zip(rows, embeds))))


def add_lora(backbone: PocketBackbone, cfg: BackboneTrainConfig):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=list(LORA_TARGETS), bias="none")
    with warnings.catch_warnings():  # peft asks the model for a property transformers has deprecated
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(backbone.llm, config)  # the LLM's linear layers gain adapters in place


def save_pocket_checkpoint(out: str, connector: Connector, peft_model, training: dict) -> None:
    """Connector + peft adapter (float16 on disk: half the size, and the merge is done in float32)."""
    connector.config.training = training
    connector.save_pretrained(out)
    for config in peft_model.peft_config.values():  # a name, not this machine's cache path
        config.base_model_name_or_path = LLM_NAME
    peft_model.save_pretrained(out, save_embedding_layers=False)  # no embedding layer is adapted
    card = os.path.join(out, "README.md")  # peft's empty model card; the run is documented in docs/
    if os.path.isfile(card):
        os.remove(card)
    path = os.path.join(out, "adapter_model.safetensors")
    save_file({k: v.half().contiguous() for k, v in load_file(path).items()}, path + ".tmp")
    os.replace(path + ".tmp", path)


def kind_metrics(examples: list[Example], losses: list, first: list) -> dict:
    """Held-out loss and first-token accuracy per kind of example."""
    result: dict = {}
    for kind in EXAMPLE_KINDS:
        idx = [i for i, ex in enumerate(examples) if ex.kind == kind]
        if idx:
            result[f"val_loss_{kind}"] = float(np.mean([losses[i] for i in idx]))
            result[f"val_first_token_{kind}"] = float(np.mean([first[i] for i in idx]))
    return result


def train_backbone(cfg: BackboneTrainConfig) -> str:
    """Run (or resume) stage 2; returns the output folder, a pocket checkpoint."""
    pool = EpisodePool(cfg.fashion_per_class, cfg.easy_vqa_images, cfg.seed)
    key = f"stage2-s{cfg.seed}-f{cfg.fashion_per_class}-e{cfg.easy_vqa_images}-128px"
    features = vision_features(pool.images, 128, key)
    pool.images = []  # the features are all the loop needs

    set_seed(cfg.seed)
    device = process_device()
    backbone = PocketBackbone.from_pretrained(cfg.init, device=device)
    peft_model = add_lora(backbone, cfg)
    for p in backbone.connector.parameters():
        p.requires_grad_(True)
    model = EpisodeModel(backbone, features)
    lora_params = [p for p in model.llm.parameters() if p.requires_grad]
    groups = [{"params": list(model.connector.parameters()), "lr": cfg.lr_connector},
              {"params": lora_params, "lr": cfg.lr_lora}]
    logger.info("trainable: connector %d, LoRA %d parameters",
                sum(p.numel() for p in model.connector.parameters()), sum(p.numel() for p in lora_params))

    def draw(rng: np.random.Generator, n: int) -> list[Example]:
        return [pool.sample(rng, cfg.caption_fraction, cfg.vqa_fraction, cfg.max_shots) for _ in range(n)]

    val = [pool.sample(np.random.default_rng([cfg.seed, 10**6, i]), cfg.caption_fraction, cfg.vqa_fraction,
                       cfg.max_shots) for i in range(cfg.val_examples)]
    done = fit(cfg, model, groups, draw, val, device=device, desc="train backbone (stage 2)", metrics=kind_metrics)
    if done.accelerator.is_main_process:
        training = {
            "objective": "stage 2: cross-entropy of the query's answer in interleaved sequences; connector and "
                         "LoRA trained, vision tower and LLM weights frozen",
            "data": f"Fashion-MNIST train ({cfg.fashion_per_class} images per class) label-binding episodes with "
                    f"2-5 classes and made-up words of the training pool, up to {cfg.max_shots} demonstrations; "
                    f"easy-VQA train question runs ({cfg.easy_vqa_images} scenes, 0-8 demonstrations, "
                    f"{cfg.vqa_fraction:.0%}); captions of the same images ({cfg.caption_fraction:.0%})",
            "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "targets": list(LORA_TARGETS)},
            "config": dataclasses.asdict(cfg),
            "steps_done": done.step,
            "minutes": done.minutes,
        }
        save_pocket_checkpoint(cfg.out, backbone.connector, peft_model, training)
        plot_loss(os.path.join(cfg.out, "log.jsonl"), os.path.join(cfg.out, "loss.png"),
                  "pocket backbone stage 2: answer loss")
    return cfg.out
