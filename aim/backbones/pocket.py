"""The pocket backbone: EfficientNet-Lite0 -> trained connector -> SmolLM2-135M-Instruct.

Everything comes from installed packages (see aim/pocket/assets.py) and the checkpoints that ship
in ``aim/checkpoints``: ``pocket-connector`` (stage 1, captions) and ``pocket-icl`` (stage 2,
interleaved episodes: connector + a LoRA merged into the LLM at load), the default. It runs offline
on a laptop CPU. Several images per prompt are supported, so raw multimodal ICL is a real baseline.
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Optional, Sequence

import torch
from PIL import Image

from ..errors import BackboneError
from ..pocket.assets import LLM_NAME, llm_folder
from ..pocket.connector import Connector
from ..pocket.vision import VisionTower
from .base import Backbone, Encoded, Segment, Virtual
from .hf import quantization_config

logger = logging.getLogger(__name__)

CHECKPOINTS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "checkpoints")
STAGE1_CONNECTOR = os.path.join(CHECKPOINTS, "pocket-connector")  # `aim train connector`
DEFAULT_CHECKPOINT = os.path.join(CHECKPOINTS, "pocket-icl")  # `aim train backbone`: connector + LoRA
DEFAULT_FUSER = os.path.join(CHECKPOINTS, "pocket-fuser")  # `aim train fuser` on the default checkpoint
DEFAULT_CONNECTOR = DEFAULT_CHECKPOINT  # the folder `pocket` loads (its connector, and LoRA if any)


def file_digest(path: str, size: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:size]


class PocketBackbone(Backbone):
    family = "pocket"
    # the connector was trained with a newline between the image and the text; the answer prefix
    # keeps the 135M LLM's replies short (measured in docs/pocket-backbone.md)
    demo_template = "\nQuestion: {question}\nAnswer: {answer}\n"
    query_template = "\nQuestion: {question}\nAnswer with one word or a short phrase."
    answer_prefix = "Answer:"

    def __init__(self, llm, tokenizer, vision: VisionTower, connector: Connector, model_id: str,
                 dtype: torch.dtype = torch.float32, device: str = "cpu", layer: int = -1,
                 revision: Optional[str] = None):
        super().__init__(model_id, dtype, device, layer)
        self.llm = llm.eval()
        for p in self.llm.parameters():
            p.requires_grad_(False)
        self._tokenizer = tokenizer
        self.vision = vision.to(self.device)
        self.connector = connector.to(self.device, dtype)
        self._revision = revision
        self.image_batch = 32

    @classmethod
    def from_pretrained(cls, path: Optional[str] = None, *, dtype: torch.dtype = torch.float32,
                        device: str = "cpu", device_map=None, load_in_4bit: bool = False,
                        load_in_8bit: bool = False, trust_remote_code: bool = False,
                        revision: Optional[str] = None, layer: int = -1, connector: Optional[Connector] = None):
        """``path``: a connector checkpoint folder (default: the shipped one). ``connector``: use
        this module instead (training)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = path or DEFAULT_CONNECTOR
        if connector is None:
            connector = Connector.from_pretrained(path)
            revision = revision or file_digest(os.path.join(path, "connector.safetensors"))
        if connector.config.llm != LLM_NAME:
            raise BackboneError(f"connector {path} was trained for {connector.config.llm}, not {LLM_NAME}")
        folder = llm_folder()
        quant = quantization_config(load_in_4bit, load_in_8bit, dtype)
        kwargs = {"dtype": dtype}
        if quant is not None:
            kwargs.update(quantization_config=quant, device_map=device_map or device)
        llm = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        adapter = os.path.join(path, "adapter_model.safetensors")
        if os.path.isfile(adapter):  # stage 2 (`aim train backbone`): a LoRA, merged into the weights
            from peft import PeftModel

            llm = PeftModel.from_pretrained(llm, path).merge_and_unload()
            revision = f"{revision}+{file_digest(adapter)}"
        if quant is None:
            llm.to(device)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        vision = VisionTower(connector.config.image_size)
        name = "pocket" if os.path.abspath(path) == os.path.abspath(DEFAULT_CONNECTOR) else f"pocket:{path}"
        return cls(llm, tokenizer, vision, connector, name, dtype, device, layer, revision)

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def decoder(self) -> torch.nn.Module:
        return self.llm.model

    @property
    def lm_head(self) -> torch.nn.Module:
        return self.llm.lm_head

    def revision(self) -> Optional[str]:
        return self._revision

    @property
    def image_tokens(self) -> int:
        return self.connector.config.image_tokens

    def image_embeds(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, image_tokens, hidden) embeddings, as the LLM receives them."""
        out = []
        for i in range(0, len(images), self.image_batch):
            pixels = self.vision.preprocess(images[i:i + self.image_batch]).to(self.device)
            out.append(self.connector(self.vision(pixels).to(self.dtype)))
        return torch.cat(out)

    def _encode(self, segments: Sequence[Segment], spans: bool = False) -> Encoded:
        return self._encode_many([segments], spans)[0]

    def _encode_many(self, prompts: Sequence[Sequence[Segment]], spans: bool = False) -> list[Encoded]:
        images = [s for p in prompts for s in p if isinstance(s, Image.Image)]
        with torch.no_grad():
            image_embeds = iter(self.image_embeds(images)) if images else iter(())
        results = []
        for prompt in prompts:
            embeds, ids, bounds, start = [], [], [], 0
            for seg in prompt:
                if isinstance(seg, str):
                    tid = torch.tensor(self.tokenizer(seg, add_special_tokens=False).input_ids, dtype=torch.long,
                                       device=self.device)
                    emb = self.embed_tokens(tid)
                elif isinstance(seg, Image.Image):
                    emb = next(image_embeds)
                    tid = torch.full((emb.shape[0],), self.pad_id, dtype=torch.long, device=self.device)
                elif isinstance(seg, Virtual):
                    emb = seg.embeds.to(self.device, self.dtype)
                    tid = torch.full((emb.shape[0],), self.pad_id, dtype=torch.long, device=self.device)
                else:
                    raise TypeError(f"prompt segment of type {type(seg).__name__}: use str, PIL.Image or Virtual")
                embeds.append(emb)
                ids.append(tid)
                bounds.append((start, start + emb.shape[0]))
                start += emb.shape[0]
            results.append(Encoded(torch.cat(embeds), torch.arange(start, device=self.device), torch.cat(ids),
                                   bounds if spans else None))
        return results
