"""aim: many-shot multimodal in-context learning for frozen MLLMs (the AIM method)."""
import logging

from .backbones import Backbone, Demo, Virtual, available, load_backbone
from .errors import AimError, BackboneError, ImageError

__version__ = "0.1.0"
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["AimError", "Backbone", "BackboneError", "Demo", "ImageError", "Virtual", "available",
           "load_backbone", "__version__"]
