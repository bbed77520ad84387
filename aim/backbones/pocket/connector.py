"""The pocket backbone's connector: EfficientNet-Lite0 feature map -> LLM input embeddings.

A LLaVA-1.5-style two-layer MLP over each cell of the final feature map, saved in the peft manner:
``connector_config.json`` + ``connector.safetensors``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

from ...errors import BackboneError, ConfigError
from ...files import load_weights, read_json, save_module

CONFIG_NAME = "connector_config.json"
WEIGHTS_NAME = "connector.safetensors"


@dataclass
class ConnectorConfig:
    vision: str = field(default="efficientnet-lite0", metadata={"help": "vision tower (frozen, ImageNet)"})
    image_size: int = field(default=128, metadata={"help": "input resolution; 128 px gives 4x4 = 16 image tokens"})
    feature_dim: int = field(default=1280, metadata={"help": "channels of the vision feature map"})
    llm: str = field(default="SmolLM2-135M-Instruct", metadata={"help": "the LLM whose embedding space is the target"})
    hidden_size: int = field(default=576, metadata={"help": "the LLM's hidden size"})
    training: dict = field(default_factory=dict, metadata={"help": "what the checkpoint was trained on, and how"})

    def __post_init__(self):
        if self.image_size % 32:
            raise ConfigError(f"image_size must be a multiple of 32 (EfficientNet stride), got {self.image_size}")

    @property
    def image_tokens(self) -> int:
        return (self.image_size // 32) ** 2


class Connector(nn.Module):
    """(batch, feature_dim, h, w) feature map -> (batch, h*w, hidden_size) embeddings."""

    def __init__(self, config: ConnectorConfig):
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.feature_dim)
        self.fc1 = nn.Linear(config.feature_dim, config.hidden_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.flatten(2).transpose(1, 2)
        return self.fc2(self.act(self.fc1(self.norm(x))))

    def save_pretrained(self, folder: str) -> None:
        save_module(folder, self, self.config, WEIGHTS_NAME, CONFIG_NAME)

    @classmethod
    def from_pretrained(cls, folder: str) -> "Connector":
        cfg_path, weights = os.path.join(folder, CONFIG_NAME), os.path.join(folder, WEIGHTS_NAME)
        if not (os.path.isfile(cfg_path) and os.path.isfile(weights)):
            raise BackboneError(f"{folder} is not a connector checkpoint (needs {CONFIG_NAME} and {WEIGHTS_NAME}); "
                                "train one with `aim train connector`")
        fix = "train one with `aim train connector`, or reinstall aim for the shipped ones"
        raw = read_json(cfg_path, fix, BackboneError)
        try:
            config = ConnectorConfig(**raw)
        except TypeError as err:  # a field this aim does not know
            raise BackboneError(f"{cfg_path} is not a connector config ({err}): {fix}") from None
        model = cls(config)
        load_weights(model, weights, CONFIG_NAME, fix, BackboneError)
        return model
