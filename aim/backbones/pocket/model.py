"""The pocket backbone: EfficientNet-Lite0 -> trained connector -> SmolLM2-135M-Instruct.

Everything comes from installed packages (``assets.py``) and the checkpoints that ship in
``checkpoints/`` beside this file: ``connector`` (stage 1, captions), ``icl`` (stage 2, interleaved
episodes: connector + a LoRA merged into the LLM at load; the default) and ``fuser`` (the fuser that
ships for the default). It runs offline on a laptop CPU. Several images per prompt are supported, so
raw multimodal ICL is a real baseline.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Optional, Sequence

import torch
from PIL import Image

from ...errors import BackboneError
from ...files import file_digest
from ..base import Backbone, Encoded, Segment, Virtual
from ..hf import quantization_config
from .assets import LLM_NAME, llm_folder
from .config import DEFAULT_CHECKPOINT, DEFAULT_FUSER
from .connector import Connector
from .vision import VisionTower

logger = logging.getLogger(__name__)



def merge_lora(llm, folder: str):
    """The LLM with the peft adapter in ``folder`` merged into its weights."""
    from peft import PeftModel

    with warnings.catch_warnings():  # peft asks the model for a property transformers has deprecated
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return PeftModel.from_pretrained(llm, folder).merge_and_unload()


def dispatch(llm, device_map, max_memory: Optional[dict], offload_folder: Optional[str]):
    """The LLM placed by accelerate (``device_map`` "auto"/"balanced"/"sequential" or a dict) -> (llm,
    the device its inputs go to)."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    from ..hf import input_device

    if isinstance(device_map, str):
        if device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
            raise BackboneError(f"device map {device_map!r}: use auto, balanced, balanced_low_0, sequential or a dict")
        if device_map != "sequential":
            max_memory = get_balanced_memory(llm, max_memory=max_memory, no_split_module_classes=llm._no_split_modules,
                                             low_zero=device_map == "balanced_low_0")
        device_map = infer_auto_device_map(llm, max_memory=max_memory, no_split_module_classes=llm._no_split_modules)
    if "disk" in device_map.values() and not offload_folder:
        raise BackboneError("the device map puts layers on disk: give an offload folder (--offload-folder)")
    llm = dispatch_model(llm, device_map=device_map, offload_dir=offload_folder)
    llm.hf_device_map = device_map
    return llm, input_device(llm)


class PocketBackbone(Backbone):
    family = "pocket"
    ships_weights = True  # `load_backbone("pocket")` needs no path: the checkpoints above ship with it
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
                        revision: Optional[str] = None, layer: int = -1, connector: Optional[Connector] = None,
                        max_memory: Optional[dict] = None, offload_folder: Optional[str] = None):
        """``path``: a connector checkpoint folder (default: the shipped one). ``connector``: use
        this module instead (training). ``device_map`` (without 4/8-bit weights), ``max_memory``,
        ``offload_folder``: the LLM, its LoRA merged, dispatched by accelerate over devices and disk."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = path or DEFAULT_CHECKPOINT
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
            llm = merge_lora(llm, path)
            revision = f"{revision}+{file_digest(adapter)}"
        if quant is None and device_map is not None:
            llm, device = dispatch(llm, device_map, max_memory, offload_folder)
        elif quant is None:
            llm.to(device)
        elif max_memory or offload_folder:
            raise BackboneError("max_memory and offload_folder apply to a device map without 4/8-bit weights here")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        vision = VisionTower(connector.config.image_size)
        name = "pocket" if os.path.abspath(path) == os.path.abspath(DEFAULT_CHECKPOINT) else f"pocket:{path}"
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

    def generation_model(self):
        return self.llm

    def shipped_fuser(self) -> Optional[str]:
        """The shipped fuser, made for the default checkpoint (other checkpoints need their own)."""
        return DEFAULT_FUSER if self.model_id == "pocket" else None

    def training_sequences(self, seed: int, max_shots: int):
        """The pocket's training episodes (label binding, class names and easy-VQA runs; training splits)."""
        from .episodes import FuserEpisodes

        return FuserEpisodes(seed, max_shots)

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

    def _encode(self, segments: Sequence[Segment], last_span: bool = False) -> Encoded:
        return self._encode_many([segments], last_span)[0]

    def _encode_many(self, prompts: Sequence[Sequence[Segment]], last_span: bool = False) -> list[Encoded]:
        images = [s for p in prompts for s in p if isinstance(s, Image.Image)]
        with torch.no_grad():
            image_embeds = iter(self.image_embeds(images)) if images else iter(())
        results = []
        for prompt in prompts:
            embeds, ids = [], []
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
            length = sum(e.shape[0] for e in embeds)
            span = (length - embeds[-1].shape[0], length) if last_span and embeds else None
            results.append(Encoded(torch.cat(embeds), torch.arange(length, device=self.device), torch.cat(ids), span))
        return results
