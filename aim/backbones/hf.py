"""Adapters for Hugging Face MLLMs, shared by every family.

The model's own code builds the input embeddings: the processor expands image placeholders, the
model merges image features into them, and a pre-hook on its language model catches the merged
``inputs_embeds`` and ``position_ids`` (Qwen2-VL's 3-axis rope included) before the LLM runs.
Fused demonstrations enter as runs of a placeholder token whose embeddings are then overwritten,
so positions and masks stay whatever the model itself would compute.
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Optional, Sequence

import torch
from PIL import Image

from ..errors import BackboneError
from .base import Backbone, Encoded, Segment, Virtual

logger = logging.getLogger(__name__)


class _Caught(Exception):
    pass


def quantization_config(load_in_4bit: bool, load_in_8bit: bool, dtype: torch.dtype):
    """A BitsAndBytesConfig for 4- or 8-bit weights, or None; a clear error without bitsandbytes."""
    if not (load_in_4bit or load_in_8bit):
        return None
    if load_in_4bit and load_in_8bit:
        raise BackboneError("choose one of load_in_4bit and load_in_8bit, not both")
    if importlib.util.find_spec("bitsandbytes") is None:
        flag = "load_in_4bit" if load_in_4bit else "load_in_8bit"
        raise BackboneError(f"{flag} needs bitsandbytes, which is not installed: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if load_in_4bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4")
    return BitsAndBytesConfig(load_in_8bit=True)


class HFBackbone(Backbone):
    """A frozen ``transformers`` MLLM. Subclasses name the model class and the image placeholder."""

    family = "hf"
    model_class = "AutoModelForImageTextToText"
    #: the text that stands for one image before the processor expands it
    image_placeholder = "<image>"

    def __init__(self, model, processor, model_id: str, dtype: torch.dtype = torch.float32, device="cpu",
                 layer: int = -1, revision: Optional[str] = None):
        super().__init__(model_id, dtype, device, layer)
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.processor = processor
        self._revision = revision
        self._virtual_id: Optional[int] = None

    @classmethod
    def from_pretrained(cls, path_or_id: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
                        device_map=None, load_in_4bit: bool = False, load_in_8bit: bool = False,
                        trust_remote_code: bool = False, revision: Optional[str] = None, layer: int = -1):
        """Load model + processor exactly as ``transformers`` does (hub id or local folder)."""
        import transformers

        quant = quantization_config(load_in_4bit, load_in_8bit, dtype)
        kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
        if revision:
            kwargs["revision"] = revision
        if quant is not None:
            kwargs["quantization_config"] = quant
            kwargs["device_map"] = device_map or device
        elif device_map is not None:
            kwargs["device_map"] = device_map
        model_cls = getattr(transformers, cls.model_class)
        try:
            model = model_cls.from_pretrained(path_or_id, **kwargs)
            processor = transformers.AutoProcessor.from_pretrained(
                path_or_id, trust_remote_code=trust_remote_code, **({"revision": revision} if revision else {}))
        except (OSError, ValueError) as err:
            raise BackboneError(f"cannot load {cls.family} backbone from {path_or_id}: {err}") from err
        if quant is None and device_map is None:
            model.to(device)
        rev = revision or getattr(model.config, "_commit_hash", None)
        return cls(model, processor, str(path_or_id), dtype, device if device_map is None else
                   str(next(model.parameters()).device), layer, rev)

    # ------------------------------------------------------------------ protocol
    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def decoder(self) -> torch.nn.Module:
        return self.model.get_decoder()

    @property
    def lm_head(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    def revision(self) -> Optional[str]:
        return self._revision

    def processor_images(self, images: list) -> object:
        """How the processor wants the images of one prompt (flat list by default)."""
        return images

    @property
    def virtual_token(self) -> str:
        """A single-token special string, absent from the chat template, that marks fused positions."""
        if self._virtual_id is None:
            tok = self.tokenizer
            template = "".join(self.chat_parts()) + self.image_placeholder
            for cand in [tok.unk_token, tok.pad_token, tok.eos_token, tok.bos_token] + list(tok.all_special_tokens):
                if cand and cand not in template and len(tok(cand, add_special_tokens=False).input_ids) == 1:
                    self._virtual_token, self._virtual_id = cand, tok.convert_tokens_to_ids(cand)
                    break
            else:
                raise BackboneError(f"{self.model_id}: no special token is free to mark fused demonstrations")
        return self._virtual_token

    def _text(self, segments: Sequence[Segment]) -> tuple[str, list]:
        parts, images = [], []
        for seg in segments:
            if isinstance(seg, str):
                parts.append(seg)
            elif isinstance(seg, Image.Image):
                parts.append(self.image_placeholder)
                images.append(seg)
            elif isinstance(seg, Virtual):
                parts.append(self.virtual_token * len(seg))
            else:
                raise TypeError(f"prompt segment of type {type(seg).__name__}: use str, PIL.Image or Virtual")
        return "".join(parts), images

    def _process(self, segments: Sequence[Segment]) -> dict:
        text, images = self._text(segments)
        kwargs = {"images": self.processor_images(images)} if images else {}
        return self.processor(text=[text], return_tensors="pt", **kwargs)

    def _encode(self, segments: Sequence[Segment], spans: bool = False) -> Encoded:
        inputs = self._process(segments)
        caught: dict = {}

        def catch(module, args, kwargs):
            caught.update(kwargs)
            raise _Caught

        inputs = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        handle = self.decoder.register_forward_pre_hook(catch, with_kwargs=True)
        try:
            with torch.no_grad():
                self.model(**inputs)
        except _Caught:
            pass
        finally:
            handle.remove()
        ids = inputs["input_ids"][0]
        embeds = caught["inputs_embeds"][0].clone()
        pos = caught.get("position_ids")
        if pos is None:
            pos = torch.arange(ids.shape[0], device=self.device)
        else:
            pos = pos[:, 0] if pos.dim() == 3 else pos[0]
        virtual = [s for s in segments if isinstance(s, Virtual)]
        if virtual:
            where = (ids == self._virtual_id).nonzero().flatten()
            fused = torch.cat([v.embeds for v in virtual]).to(embeds.device, embeds.dtype)
            if where.numel() != fused.shape[0]:
                raise BackboneError(f"{self.model_id}: {fused.shape[0]} fused tokens but {where.numel()} "
                                    f"placeholder positions; the text of the prompt contains {self.virtual_token!r}")
            embeds[where] = fused
        return Encoded(embeds, pos, ids, self._spans(segments) if spans else None)

    def _spans(self, segments: Sequence[Segment]) -> list:
        """[start, end) of each segment, from the processed lengths of growing prefixes."""
        out, start = [], 0
        for i in range(len(segments)):
            end = self._process(segments[: i + 1])["input_ids"].shape[1]
            out.append((start, end))
            start = end
        return out
