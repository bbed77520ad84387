"""Stage 2 of the pocket backbone: interleaved image-text sequences teach the 135M LLM multimodal
in-context learning (as Flamingo and IDEFICS learned it from interleaved web documents).

The connector (from stage 1) and a LoRA on every projection of the LLM (``peft``) train on
:mod:`aim.training.episodes` examples: label binding with made-up words, easy-VQA question runs and
captions, all from training splits. The loss is the cross-entropy of the query's answer (and the end
of turn) given everything before it, prompts laid out exactly as the backbone lays out raw ICL.

The loop runs through ``accelerate`` (device placement, bf16 autocast on GPUs, gradient
accumulation, several processes with ``accelerate launch``); batches come from a generator seeded by
(seed, step), so a run resumed from its last checkpoint ends with the weights of an uninterrupted one.
The output folder is a pocket checkpoint: ``connector_config.json`` + ``connector.safetensors`` and
the peft adapter ``adapter_config.json`` + ``adapter_model.safetensors`` (merged into the LLM at load).
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
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..backbones.base import Demo, Virtual
from ..backbones.pocket import STAGE1_CONNECTOR, PocketBackbone
from ..errors import AimError
from ..pocket.assets import LLM_NAME
from ..pocket.connector import Connector
from .connector import vision_features
from .episodes import EpisodePool, Example
from .loop import (accumulated_step, append_log, held_out, lr_at, plot_loss, resume_point, save_state,
                   seed_everything)

logger = logging.getLogger(__name__)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
KINDS = ("binding", "vqa", "caption")


@dataclass
class BackboneTrainConfig:
    out: str = "runs/pocket-icl"
    init: str = STAGE1_CONNECTOR  # the stage-1 connector to start from
    steps: int = 320
    stop_after: Optional[int] = None
    batch_size: int = 8  # examples per optimizer step and process (split over grad_accum micro-batches)
    grad_accum: int = 1
    lr_connector: float = 3e-4
    lr_lora: float = 2e-4
    warmup: int = 20
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    caption_fraction: float = 0.15
    vqa_fraction: float = 0.15
    max_shots: int = 10
    fashion_per_class: int = 600
    easy_vqa_images: int = 3000
    seed: int = 0
    val_examples: int = 48
    eval_every: int = 50
    save_every: int = 20
    log_every: int = 2
    mixed_precision: str = "auto"  # auto: bf16 on CUDA, none on CPU


class EpisodeModel(nn.Module):
    """The trainable part (connector + LoRA-wrapped LLM) with the episode loss as its forward, so
    ``accelerate`` can wrap it (DDP) like any model."""

    def __init__(self, backbone: PocketBackbone):
        super().__init__()
        self.connector = backbone.connector
        self.llm = backbone.llm
        object.__setattr__(self, "backbone", backbone)  # not a submodule: it holds the two above

    def prompts(self, examples: list[Example], image_embeds: dict[int, torch.Tensor]) -> list[list]:
        bb = self.backbone
        out = []
        for ex in examples:
            if ex.kind == "caption":
                body = [Virtual(image_embeds[ex.image]), "\n" + ex.question]
            else:
                body = []
                for image, question, answer in ex.demos:
                    body += [Virtual(image_embeds[image]), bb.demo_text(Demo(None, question, answer))]
                body += [Virtual(image_embeds[ex.image]), bb.query_text(ex.question)]
            out.append(bb.wrap(body) + [" " + ex.target + "<|im_end|>"])
        return out

    def forward(self, features: torch.Tensor, examples: list[Example]) -> tuple[torch.Tensor, list, list]:
        """Per-example mean cross-entropy of the target, averaged; also per-example losses and
        whether the target's first token is the argmax."""
        rows = sorted({ex.image for ex in examples} | {d[0] for ex in examples for d in ex.demos})
        embeds = self.connector(features[rows].to(self.connector.fc1.weight.device).float())
        by_row = dict(zip(rows, embeds))
        batch = self.backbone.encode(self.prompts(examples, by_row), spans=True, chat=False)
        hidden = self.backbone.run(batch).last_hidden_state
        losses, first = [], []
        for i, spans in enumerate(batch.spans):
            start, end = spans[-1]
            logits = self.llm.lm_head(hidden[i, start - 1:end - 1]).float()
            labels = batch.input_ids[i, start:end]
            losses.append(nn.functional.cross_entropy(logits, labels))
            first.append(bool(logits[0].argmax() == labels[0]))
        return torch.stack(losses).mean(), [x.item() for x in losses], first


def add_lora(backbone: PocketBackbone, cfg: BackboneTrainConfig):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=list(LORA_TARGETS), bias="none")
    return get_peft_model(backbone.llm, config)  # the LLM's linear layers gain adapters in place


def save_pocket_checkpoint(out: str, connector: Connector, peft_model, training: dict) -> None:
    """Connector + peft adapter (float16 on disk: half the size, and the merge is done in float32)."""
    connector.config.training = training
    connector.save_pretrained(out)
    for config in peft_model.peft_config.values():  # a name, not this machine's cache path
        config.base_model_name_or_path = LLM_NAME
    peft_model.save_pretrained(out)
    card = os.path.join(out, "README.md")  # peft's empty model card; the run is documented in docs/
    if os.path.isfile(card):
        os.remove(card)
    path = os.path.join(out, "adapter_model.safetensors")
    save_file({k: v.half().contiguous() for k, v in load_file(path).items()}, path + ".tmp")
    os.replace(path + ".tmp", path)


def train_backbone(cfg: BackboneTrainConfig) -> str:
    """Run (or resume) stage 2; returns the output folder, a pocket checkpoint."""
    from accelerate import Accelerator
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    cuda = torch.cuda.is_available()
    precision = ("bf16" if cuda else "no") if cfg.mixed_precision == "auto" else cfg.mixed_precision
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=precision, cpu=not cuda)
    if cfg.batch_size % cfg.grad_accum:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of grad_accum {cfg.grad_accum}")
    os.makedirs(cfg.out, exist_ok=True)
    if accelerator.is_main_process:
        with open(os.path.join(cfg.out, "train_config.json"), "w") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=2, sort_keys=True)
    pool = EpisodePool(cfg.fashion_per_class, cfg.easy_vqa_images, cfg.seed)
    key = f"stage2-s{cfg.seed}-f{cfg.fashion_per_class}-e{cfg.easy_vqa_images}-128px"
    features = vision_features(pool.images, 128, key)
    pool.images = []  # the features are all the loop needs

    seed_everything(cfg.seed)
    backbone = PocketBackbone.from_pretrained(cfg.init, device=str(accelerator.device))
    peft_model = add_lora(backbone, cfg)
    for p in backbone.connector.parameters():
        p.requires_grad_(True)
    model = EpisodeModel(backbone)
    lora_params = [p for n, p in model.llm.named_parameters() if p.requires_grad]
    groups = [{"params": list(model.connector.parameters()), "base_lr": cfg.lr_connector},
              {"params": lora_params, "base_lr": cfg.lr_lora}]
    optim = torch.optim.AdamW([dict(g, lr=g["base_lr"]) for g in groups], weight_decay=0.0)
    logger.info("trainable: connector %d, LoRA %d parameters",
                sum(p.numel() for p in model.connector.parameters()), sum(p.numel() for p in lora_params))

    state_path, log_path = os.path.join(cfg.out, "state.pt"), os.path.join(cfg.out, "log.jsonl")
    state = resume_point(cfg.out)
    step, elapsed = state["step"], state["elapsed"]
    if step:
        model.connector.load_state_dict(state["connector"])
        set_peft_model_state_dict(peft_model, state["lora"])
        optim.load_state_dict(state["optim"])
        logger.info("resuming %s at step %d", cfg.out, step)
    model, optim = accelerator.prepare(model, optim)
    inner = accelerator.unwrap_model(model)

    val = [pool.sample(np.random.default_rng([cfg.seed, 10**6, i]), cfg.caption_fraction, cfg.vqa_fraction,
                       cfg.max_shots) for i in range(cfg.val_examples)]

    def validate() -> dict:
        result: dict = {}
        losses, first = held_out(model, val, lambda chunk: model(features, chunk))
        for kind in KINDS:
            idx = [i for i, ex in enumerate(val) if ex.kind == kind]
            if idx:
                result[f"val_loss_{kind}"] = float(np.mean([losses[i] for i in idx]))
                result[f"val_first_token_{kind}"] = float(np.mean([first[i] for i in idx]))
        return result

    last = min(cfg.steps, cfg.stop_after or cfg.steps)
    rank, world = accelerator.process_index, accelerator.num_processes
    bar = tqdm(total=last, initial=step, desc="train backbone (stage 2)", unit="step",
               disable=not accelerator.is_main_process)
    start_time = time.perf_counter() - elapsed
    model.train()
    while step < last:
        rng = np.random.default_rng([cfg.seed, step])
        examples = [pool.sample(rng, cfg.caption_fraction, cfg.vqa_fraction, cfg.max_shots)
                    for _ in range(cfg.batch_size * world)][rank::world]
        for group in optim.param_groups:
            group["lr"] = lr_at(step, cfg.steps, group["base_lr"], cfg.warmup)
        total = accumulated_step(accelerator, model, optim, examples, cfg.grad_accum,
                                 lambda micro: model(features, micro)[0])
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{total:.3f}")
        row = {"step": step, "loss": total, "lr": optim.param_groups[1]["lr"],
               "time": time.perf_counter() - start_time}
        if step % cfg.eval_every == 0 or step == last:
            row.update(validate())
            logger.info("step %d: %s", step, {k: round(v, 3) for k, v in row.items() if k.startswith("val")})
        if accelerator.is_main_process:
            if step % cfg.log_every == 0 or "val_loss_binding" in row:
                append_log(log_path, row)
            if step % cfg.save_every == 0 or step == last:
                save_state(state_path, connector=inner.connector.state_dict(),
                           lora=get_peft_model_state_dict(peft_model), optim=optim.state_dict(), step=step,
                           elapsed=time.perf_counter() - start_time)
    bar.close()
    if accelerator.is_main_process:
        training = {
            "objective": "stage 2: cross-entropy of the query's answer in interleaved sequences; connector and "
                         "LoRA trained, vision tower and LLM weights frozen",
            "data": f"Fashion-MNIST train ({cfg.fashion_per_class} images per class) label-binding episodes with "
                    f"2-5 classes and made-up words of the training pool, up to {cfg.max_shots} demonstrations; "
                    f"easy-VQA train question runs ({cfg.easy_vqa_images} scenes, 0-8 demonstrations, "
                    f"{cfg.vqa_fraction:.0%}); captions of the same images ({cfg.caption_fraction:.0%})",
            "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "targets": list(LORA_TARGETS)},
            "config": dataclasses.asdict(cfg),
            "steps_done": step,
            "minutes": round((time.perf_counter() - start_time) / 60, 1),
        }
        save_pocket_checkpoint(cfg.out, inner.connector, peft_model, training)
        plot_loss(log_path, os.path.join(cfg.out, "loss.png"), "pocket backbone stage 2: answer loss")
    return cfg.out


def export_state(run: str, out: str) -> str:
    """Write the pocket checkpoint of a stage-2 run's last resume point (``run/state.pt``) to
    ``out``: a run still going can be evaluated, or one stopped early shipped."""
    from peft import set_peft_model_state_dict

    if not os.path.isfile(os.path.join(run, "state.pt")):
        raise AimError(f"{run} has no state.pt: give the folder of an `aim train backbone` run that has saved a "
                       "checkpoint (every --save-every steps)")
    state = torch.load(os.path.join(run, "state.pt"), weights_only=False)
    cfg_path = os.path.join(run, "train_config.json")
    cfg = BackboneTrainConfig(**json.load(open(cfg_path))) if os.path.isfile(cfg_path) else BackboneTrainConfig()
    backbone = PocketBackbone.from_pretrained(cfg.init)
    peft_model = add_lora(backbone, cfg)
    backbone.connector.load_state_dict(state["connector"])
    set_peft_model_state_dict(peft_model, state["lora"])
    save_pocket_checkpoint(out, backbone.connector, peft_model,
                           {"exported_from": os.path.abspath(run), "steps_done": state["step"],
                            "config": dataclasses.asdict(cfg)})
    return out
