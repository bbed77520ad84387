"""Idefics2, Idefics3 and SmolVLM: the processor takes one list of images per prompt."""
from .hf import HFBackbone


class Idefics2Backbone(HFBackbone):
    family = "idefics2"
    model_class = "Idefics2ForConditionalGeneration"
    image_placeholder = "<image>"
    end_of_turn_tokens = ("<end_of_utterance>",)
    # Idefics2's processor puts a space between an image and the word after it ("<image> What"), so
    # text after an image starts with one: a demonstration then has the same tokens in a prompt as alone.
    demo_template = " " + HFBackbone.demo_template
    query_template = " " + HFBackbone.query_template

    def processor_images(self, images):
        return [images]

    def default_chat_parts(self):
        return "User:", "<end_of_utterance>\nAssistant:", "<end_of_utterance>\n"


class Idefics3Backbone(Idefics2Backbone):
    family = "idefics3"
    model_class = "Idefics3ForConditionalGeneration"
    demo_template = HFBackbone.demo_template
    query_template = HFBackbone.query_template

    def default_chat_parts(self):
        return "<|im_start|>User:", "<end_of_utterance>\nAssistant:", "<end_of_utterance>\n"


class SmolVLMBackbone(Idefics3Backbone):
    family = "smolvlm"
    model_class = "SmolVLMForConditionalGeneration"
    processor_class = "SmolVLMProcessor"
