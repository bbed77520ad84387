"""LLaVA-1.5 (LlavaForConditionalGeneration) and LLaVA-NeXT (LlavaNextForConditionalGeneration)."""
from .hf import HFBackbone


class LlavaBackbone(HFBackbone):
    family = "llava"
    model_class = "LlavaForConditionalGeneration"
    image_placeholder = "<image>\n"

    def default_chat_parts(self):
        # LLaVA-1.5's conversation format, for checkpoints saved without a chat template
        return "USER: ", " ASSISTANT:", ""


class LlavaNextBackbone(LlavaBackbone):
    family = "llava_next"
    model_class = "LlavaNextForConditionalGeneration"
