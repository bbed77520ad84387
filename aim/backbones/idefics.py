"""Idefics2, Idefics3 and SmolVLM: the processor takes one list of images per prompt."""
from .hf import HFBackbone


class Idefics2Backbone(HFBackbone):
    family = "idefics2"
    model_class = "Idefics2ForConditionalGeneration"
    image_placeholder = "<image>"

    def processor_images(self, images):
        return [images]

    def default_chat_parts(self):
        return "User:", "<end_of_utterance>\nAssistant:", "<end_of_utterance>\n"


class Idefics3Backbone(Idefics2Backbone):
    family = "idefics3"
    model_class = "Idefics3ForConditionalGeneration"


class SmolVLMBackbone(Idefics2Backbone):
    family = "smolvlm"
    model_class = "SmolVLMForConditionalGeneration"
