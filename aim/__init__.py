"""aim: many-shot multimodal in-context learning for frozen MLLMs (the AIM method)."""
import logging

from .api import Answer, FewShot
from .backbones import Backbone, Demo, Virtual, available, load_backbone
from .bank import DemoBank
from .compress import compress_demos
from .data.spec import load_records
from .errors import AimError, BackboneError, ImageError
from .fusion import Fuser, FusionConfig

__version__ = "0.1.0"
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["AimError", "Answer", "Backbone", "BackboneError", "Demo", "DemoBank", "FewShot", "Fuser",
           "FusionConfig", "ImageError", "Virtual", "available", "compress_demos", "load_backbone", "load_records",
           "__version__"]
