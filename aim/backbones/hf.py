"""Adapters for Hugging Face MLLMs, shared by every family.

The model's own code builds the input embeddings: the processor expands image placeholders, the
model merges image features into them, and a pre-hook on its language model catches the merged
``inputs_embeds`` and ``position_ids`` (Qwen2-VL's 3-axis rope included) before the LLM runs.
Fused demonstrations enter as runs of a placeholder token whose embeddings are then overwritten,
so positions and masks stay whatever the model itself would compute.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import types
from typing import Optional, Sequence

import torch
from jinja2 import TemplateError
from PIL import Image

from ..errors import BackboneError
from ..images import load_image
from .base import BODY_MARKER, Backbone, Encoded, PromptBatch, Segment, Virtual

logger = logging.getLogger(__name__)


class _Caught(Exception):
    pass


def input_device(model) -> str:
    """Where a model dispatched by a device map takes its inputs: the device of its first module that
    is not offloaded to disk (offloaded layers run there too), or of its first parameter."""
    placed = getattr(model, "hf_device_map", None) or {}
    for where in placed.values():
        if where != "disk":
            return f"cuda:{where}" if isinstance(where, int) else str(where)
    if placed:  # all of it on disk: layers are loaded onto the main device as they run
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return str(next(model.parameters()).device)


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


@functools.lru_cache(maxsize=None)
def image_only_processor(processor_cls):
    """``processor_cls`` without its video processor, which transformers 5 builds only with
    torchvision; images and text are processed exactly as by ``processor_cls``.

    The subclass keeps the parent's ``__init__`` (its keyword arguments are what ``from_pretrained``
    reads from processor_config.json and ``save_pretrained`` writes) with ``video_processor=None``
    as a default, and leaves the video processor out of the parts it loads, checks and saves."""
    init = processor_cls.__init__
    code = init.__code__
    defaults = tuple(init.__defaults__ or ())
    defaults = (None,) * (code.co_argcount - 1 - len(defaults)) + defaults  # every argument after self
    new_init = types.FunctionType(code, init.__globals__, "__init__", defaults, init.__closure__)
    new_init.__kwdefaults__ = init.__kwdefaults__

    def get_attributes(cls):
        return [a for a in processor_cls.get_attributes() if a != "video_processor"]

    return type(processor_cls.__name__, (processor_cls,),
                {"__init__": new_init, "get_attributes": classmethod(get_attributes), "__module__": __name__})


class HFBackbone(Backbone):
    """A frozen ``transformers`` MLLM. Subclasses name the model class and the image placeholder."""

    family = "hf"
    model_class = "AutoModelForImageTextToText"
    #: the processor class, used without its video processor when torchvision is missing (None: not needed)
    processor_class: Optional[str] = None
    #: the text that stands for one image before the processor expands it
    image_placeholder = "<image>"
    #: tokens that end the assistant's turn besides the tokenizer's EOS (when in the vocabulary)
    end_of_turn_tokens: tuple[str, ...] = ()
    #: rope axes of the language model's position ids (Qwen2-VL: 3)
    position_axes = 1

    def __init__(self, model, processor, model_id: str, dtype: torch.dtype = torch.float32, device="cpu",
                 layer: int = -1, revision: Optional[str] = None):
        super().__init__(model_id, dtype, device, layer)
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.processor = processor
        self._revision = revision
        self._virtual_id: Optional[int] = None
        self._parts: dict[bool, tuple[str, str, str]] = {}
        self.extra_eos_ids = self._eos_ids()

    @classmethod
    def from_pretrained(cls, path_or_id: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
                        device_map=None, load_in_4bit: bool = False, load_in_8bit: bool = False,
                        trust_remote_code: bool = False, revision: Optional[str] = None, layer: int = -1,
                        max_memory: Optional[dict] = None, offload_folder: Optional[str] = None):
        """Load model + processor exactly as ``transformers`` does (hub id or local folder).
        ``device_map`` ("auto", "balanced", "sequential" or a dict), ``max_memory`` (device ->
        size) and ``offload_folder``: accelerate's big-model loading, for a model larger than one
        device (layers over several GPUs, the CPU and the disk)."""
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
        if (max_memory or offload_folder) and "device_map" not in kwargs:
            raise BackboneError("max_memory and offload_folder apply to a device map: add --device-map auto")
        if max_memory:
            kwargs["max_memory"] = max_memory
        if offload_folder:
            kwargs["offload_folder"] = offload_folder
        model_cls = getattr(transformers, cls.model_class)
        try:
            model = model_cls.from_pretrained(path_or_id, **kwargs)
            processor = cls.load_processor(path_or_id, trust_remote_code=trust_remote_code,
                                           **({"revision": revision} if revision else {}))
        except (OSError, ValueError, ImportError) as err:
            raise BackboneError(f"cannot load {cls.family} backbone from {path_or_id}: {err}") from err
        if quant is None and device_map is None:
            model.to(device)
        rev = revision or getattr(model.config, "_commit_hash", None)
        return cls(model, processor, str(path_or_id), dtype, device if "device_map" not in kwargs else
                   input_device(model), layer, rev)

    @classmethod
    def load_processor(cls, path_or_id: str, **kwargs):
        """``AutoProcessor``; where its video processor cannot load (transformers 5 builds it only with
        torchvision, and from a video_preprocessor_config.json), the same processor without videos."""
        import transformers

        try:
            return transformers.AutoProcessor.from_pretrained(path_or_id, **kwargs)
        except (ImportError, OSError) as err:
            if cls.processor_class is None or not any(w in str(err) for w in ("orchvision", "video")):
                raise
            logger.info("%s loads without its video processor: %s", cls.processor_class, str(err).splitlines()[0])
        return image_only_processor(getattr(transformers, cls.processor_class)).from_pretrained(path_or_id, **kwargs)

    # ------------------------------------------------------------------ protocol
    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def decoder(self) -> torch.nn.Module:
        return self.model.get_decoder()

    def generation_model(self):
        return self.model

    @property
    def lm_head(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    def revision(self) -> Optional[str]:
        return self._revision

    @property
    def quantization(self) -> Optional[str]:
        """How the weights are quantized ("bnb-nf4", "bnb-int8", another method's name), or None."""
        config = getattr(self.model.config, "quantization_config", None)
        if config is None:
            return None
        config = config if isinstance(config, dict) else config.to_dict()
        if config.get("load_in_4bit"):
            return f"bnb-{config.get('bnb_4bit_quant_type') or '4bit'}"
        if config.get("load_in_8bit"):
            return "bnb-int8"
        method = config.get("quant_method", "quantized")
        return str(getattr(method, "value", method))

    def fingerprint(self, layer: Optional[int] = None) -> dict:
        """As Backbone's; quantized weights give other hidden states, so their dtype says so
        ("float16+bnb-nf4")."""
        fp = super().fingerprint(layer)
        if self.quantization:
            fp["dtype"] = f"{fp['dtype']}+{self.quantization}"
        return fp

    def processor_images(self, images: list) -> object:
        """How the processor wants the images of one prompt (flat list by default)."""
        return images

    @property
    def image_token_id(self) -> Optional[int]:
        """The id the processor repeats for every image embedding."""
        for owner, name in ((self.processor, "image_token_id"), (self.model.config, "image_token_id"),
                            (self.model.config, "image_token_index")):
            if getattr(owner, name, None) is not None:
                return int(getattr(owner, name))
        return None

    def _eos_ids(self) -> list[int]:
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids = list(eos) if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []
        vocab = self.tokenizer.get_vocab()
        ids += [vocab[t] for t in self.end_of_turn_tokens if t in vocab]
        return [int(i) for i in ids]

    # ------------------------------------------------------------------ chat template
    def _render(self, content, generation: bool) -> str:
        template = getattr(self.processor, "chat_template", None) or self.tokenizer.chat_template
        msgs = [{"role": "user", "content": content}]
        return self.tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False,
                                                  add_generation_prompt=generation)

    def chat_parts_for(self, image_first: bool) -> tuple[str, str, str]:
        """(prefix, suffix with the generation prompt, suffix without) around a user turn whose
        content starts with an image or with text; from the processor's chat template, which
        takes content as a list of parts (``{"type": "image"}``, ``{"type": "text", ...}``)."""
        if image_first not in self._parts:
            parts = None
            has_template = getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
            contents = [[{"type": "text", "text": BODY_MARKER}], BODY_MARKER] if has_template else []
            if image_first and has_template:
                contents.insert(0, [{"type": "image"}, {"type": "text", "text": BODY_MARKER}])
            for content in contents:
                try:
                    gen, plain = self._render(content, True), self._render(content, False)
                except (TemplateError, TypeError, KeyError, IndexError, ValueError):
                    continue  # a template may refuse this shape of content: try the next
                if gen.count(BODY_MARKER) != 1 or plain.count(BODY_MARKER) != 1:
                    continue
                prefix, gen_suffix = gen.split(BODY_MARKER)
                suffix = plain.split(BODY_MARKER)[1]
                if isinstance(content, list) and content[0]["type"] == "image":
                    if not prefix.endswith(self.image_placeholder):
                        continue  # the template renders images its own way: use the text-first prefix
                    prefix = prefix[: len(prefix) - len(self.image_placeholder)]
                parts = (prefix, gen_suffix, suffix)
                break
            self._parts[image_first] = parts or self.default_chat_parts()
        return self._parts[image_first]

    def chat_parts(self) -> tuple[str, str, str]:
        return self.chat_parts_for(image_first=False)

    def body_chat_parts(self, body: Sequence[Segment]) -> tuple[str, str, str]:
        return self.chat_parts_for(bool(body) and isinstance(body[0], Image.Image))

    # ------------------------------------------------------------------ encoding
    @property
    def virtual_token(self) -> str:
        """A single-token special string, absent from the chat template, that marks fused positions."""
        if self._virtual_id is None:
            tok = self.tokenizer
            template = "".join(self.chat_parts_for(False) + self.chat_parts_for(True)) + self.image_placeholder
            mm_ids = {self.image_token_id}
            for cand in [tok.unk_token, tok.pad_token, tok.eos_token, tok.bos_token] + list(tok.all_special_tokens):
                if not cand or cand in template:
                    continue
                ids = tok(cand, add_special_tokens=False).input_ids
                if len(ids) == 1 and ids[0] not in mm_ids:
                    self._virtual_token, self._virtual_id = cand, ids[0]
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

    def _encode(self, segments: Sequence[Segment], last_span: bool = False) -> Encoded:
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
        if pos is None:  # the language model counts positions itself: 0, 1, ... on every rope axis
            pos = torch.arange(ids.shape[0], device=self.device)
            if self.position_axes > 1:
                pos = pos.expand(self.position_axes, -1)
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
        return Encoded(embeds, pos.clone(), ids, self._last_span(segments, ids) if last_span else None)

    def _last_span(self, segments: Sequence[Segment], ids: torch.Tensor) -> tuple[int, int]:
        """[start, end) of the last segment in the prompt's tokens ``ids``: it starts where the tokens
        of the prompt without it stop agreeing with ``ids``, so a token that spans the boundary
        (" Question" after "USER: ") belongs to the last segment. One more processor call."""
        full = ids.tolist()
        if len(segments) < 2:
            return 0, len(full)
        head = self._process(segments[:-1])["input_ids"][0].tolist()
        start = 0
        while start < min(len(head), len(full)) and head[start] == full[start]:
            start += 1
        return start, len(full)

    # ------------------------------------------------------------------ retrieval keys
    @torch.no_grad()
    def image_embeddings(self, images) -> list[torch.Tensor]:
        """Each image's embeddings as the LLM receives them (its image-token positions only)."""
        image_id = self.image_token_id
        if image_id is None:
            return super().image_embeddings(images)
        batch: PromptBatch = self.encode([[load_image(i)] for i in images], chat=False)
        mask = (batch.input_ids == image_id) & batch.attention_mask.bool()
        if not bool(mask.any(1).all()):
            raise BackboneError(f"{self.model_id}: an image gave no image tokens (image token id {image_id})")
        return [batch.inputs_embeds[i, mask[i]] for i in range(len(images))]
