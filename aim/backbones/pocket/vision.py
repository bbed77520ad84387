"""The pocket backbone's vision tower: EfficientNet-Lite0 (ImageNet weights from a package)."""
from __future__ import annotations

import contextlib
import io
import logging
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .assets import efficientnet_weights, package_folder

logger = logging.getLogger(__name__)


class VisionTower(nn.Module):
    """Images -> (batch, 1280, size/32, size/32) feature maps; frozen."""

    def __init__(self, image_size: int = 128):
        super().__init__()
        package_folder("efficientnet_lite_pytorch", "pip install --no-deps efficientnet-lite-pytorch")
        from efficientnet_lite_pytorch import EfficientNet

        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
            self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=efficientnet_weights())
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.image_size = image_size

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> (batch, 3, size, size) in [-1, 1] (EfficientNet-Lite's normalisation)."""
        arrays = [np.asarray(im.convert("RGB").resize((self.image_size, self.image_size), Image.BICUBIC))
                  for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
        return x / 127.5 - 1.0

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(pixels)

    def train(self, mode: bool = True):  # batch norm stays frozen
        return super().train(False)
