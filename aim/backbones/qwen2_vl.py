"""Qwen2-VL and Qwen2.5-VL: 3-axis rope positions come from the model itself (see hf.py)."""
from .hf import HFBackbone


class Qwen2VLBackbone(HFBackbone):
    family = "qwen2_vl"
    model_class = "Qwen2VLForConditionalGeneration"
    processor_class = "Qwen2VLProcessor"
    image_placeholder = "<|vision_start|><|image_pad|><|vision_end|>"
    end_of_turn_tokens = ("<|im_end|>",)
    position_axes = 3

    def default_chat_parts(self):
        return ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>\n")


class Qwen25VLBackbone(Qwen2VLBackbone):
    family = "qwen2_5_vl"
    model_class = "Qwen2_5_VLForConditionalGeneration"
    processor_class = "Qwen2_5_VLProcessor"
