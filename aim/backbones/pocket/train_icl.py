"""Stage 2 of the pocket backbone: interleaved image-text sequences teach the 135M LLM multimodal
in-context learning (as Flamingo and IDEFICS learned it from varied interleaved web documents).

The connector (from stage 1) and a LoRA on every projection of the LLM (``peft``) train on the
examples of ``episodes.py``: label binding over several image sets, vocabularies, question wordings
and draws, class names, easy-VQA question runs and caption runs, all from training splits. Images
go through the frozen vision tower as they are drawn (episodes change their colours and scale, so
no feature table could hold them). The loss is the cross-entropy of the query's answer (and the end of turn)
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

from ...errors import ConfigError
from ...training.log import plot_loss
from ...training.loop import fit, process_device
from ...training.loss import AnswerLoss, answer_loss, answer_prompts
from ..base import Demo, Virtual
from .assets import LLM_NAME
from .config import BackboneTrainConfig
from .connector import Connector
from .episodes import KINDS, EpisodeSampler, Example
from .model import PocketBackbone

logger = logging.getLogger(__name__)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EXAMPLE_KINDS = KINDS


class EpisodeModel(nn.Module):
    """The trainable part (connector + LoRA-wrapped LLM) with the episode loss as its forward, so
    ``accelerate`` can wrap it (DDP) like any model."""

    image_batch = 32
    group = 2  # prompts per forward, grouped by length (2 to 16 shots in one batch otherwise pad to 16)

    def __init__(self, backbone: PocketBackbone):
        super().__init__()
        self.connector = backbone.connector
        self.llm = backbone.llm
        object.__setattr__(self, "backbone", backbone)  # not a submodule: it holds the two above

    def prompts(self, examples: list[Example], embeds: list[torch.Tensor]) -> list[list]:
        """Each example as raw ICL lays it out; ``embeds`` per image, in the order the examples hold them."""
        bb = self.backbone
        it = iter(embeds)
        bodies = []
        for ex in examples:
            body = []
            for _, question, answer in ex.demos:
                body += [Virtual(next(it)), bb.demo_text(Demo(None, question, answer))]
            image = Virtual(next(it))
            bodies.append(body + ([image, bb.query_text(ex.question)] if ex.templated else [image, "\n" + ex.question]))
        return answer_prompts(bb, bodies, [" " + ex.target for ex in examples], end=bb.end_of_turn)

    def image_embeds(self, images: list) -> list[torch.Tensor]:
        """(image_tokens, hidden) per image: the frozen tower, then the trainable connector."""
        bb = self.backbone
        device = self.connector.fc1.weight.device
        out = []
        for i in range(0, len(images), self.image_batch):
            pixels = bb.vision.preprocess(images[i:i + self.image_batch]).to(device)
            out += list(self.connector(bb.vision(pixels).float()))
        return out

    def forward(self, examples: list[Example]) -> AnswerLoss:
        images = [im for ex in examples for im in [d[0] for d in ex.demos] + [ex.image]]
        return answer_loss(self.backbone, self.prompts(examples, self.image_embeds(images)), group=self.group)


def add_lora(backbone: PocketBackbone, cfg: BackboneTrainConfig):
    """A trainable LoRA on the LLM's projections: fresh, or the adapter of ``cfg.init_adapter``."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if cfg.init_adapter:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return PeftModel.from_pretrained(backbone.llm, cfg.init_adapter, is_trainable=True)
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


def start_connector(cfg: BackboneTrainConfig) -> Connector:
    """The stage-1 connector of ``cfg.init``, at ``cfg.image_size`` (its MLP runs per feature-map cell)."""
    connector = Connector.from_pretrained(cfg.init)
    if connector.config.image_size != cfg.image_size:
        config = dataclasses.replace(connector.config, image_size=cfg.image_size)
        resized = Connector(config)
        resized.load_state_dict(connector.state_dict())
        connector = resized
    return connector


def train_backbone(cfg: BackboneTrainConfig) -> str:
    """Run (or resume) stage 2; returns the output folder, a pocket checkpoint."""
    sampler = EpisodeSampler(cfg.image_sets, cfg.easy_vqa_images, cfg.seed, cfg.vocabularies)
    mix = {"caption": cfg.caption_fraction, "vqa": cfg.vqa_fraction, "names": cfg.names_fraction}
    mix["binding"] = 1.0 - sum(mix.values())
    if mix["binding"] < 0:
        raise ConfigError("--caption-fraction, --vqa-fraction and --names-fraction add up to more than 1")

    set_seed(cfg.seed)
    device = process_device()
    backbone = PocketBackbone.from_pretrained(cfg.init, device=device, connector=start_connector(cfg))
    peft_model = add_lora(backbone, cfg)
    for p in backbone.connector.parameters():
        p.requires_grad_(True)
    model = EpisodeModel(backbone)
    lora_params = [p for p in model.llm.parameters() if p.requires_grad]
    groups = [{"params": list(model.connector.parameters()), "lr": cfg.lr_connector},
              {"params": lora_params, "lr": cfg.lr_lora}]
    logger.info("trainable: connector %d, LoRA %d parameters",
                sum(p.numel() for p in model.connector.parameters()), sum(p.numel() for p in lora_params))

    def draw(rng: np.random.Generator, n: int) -> list[Example]:
        # by length: with --grad-accum, each micro-batch then holds prompts of similar length (less padding)
        return sorted((sampler.sample(rng, mix, cfg.max_shots) for _ in range(n)), key=lambda ex: len(ex.demos))

    val = [sampler.sample(np.random.default_rng([cfg.seed, 10**6, i]), mix, cfg.max_shots)
           for i in range(cfg.val_examples)]
    done = fit(cfg, model, groups, draw, val, device=device, desc="train backbone (stage 2)", metrics=kind_metrics)
    if done.accelerator.is_main_process:
        training = {
            "objective": "stage 2: cross-entropy of the query's answer in interleaved sequences; connector and "
                         "LoRA trained, vision tower and LLM weights frozen",
            "data": f"{sampler.description()}; mix {', '.join(f'{k} {v:.0%}' for k, v in mix.items())}; up to "
                    f"{cfg.max_shots} demonstrations",
            "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "targets": list(LORA_TARGETS),
                     "init": cfg.init_adapter and os.path.basename(os.path.normpath(cfg.init_adapter))},
            "config": dataclasses.asdict(cfg),
            "steps_done": done.step,
            "minutes": done.minutes,
        }
        save_pocket_checkpoint(cfg.out, backbone.connector, peft_model, training)
        plot_loss(os.path.join(cfg.out, "log.jsonl"), os.path.join(cfg.out, "loss.png"),
                  "pocket backbone stage 2: answer loss")
    return cfg.out
