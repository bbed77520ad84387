"""aim: many-shot multimodal in-context learning for frozen MLLMs (the AIM method).

The public names below are imported from their modules on first use (aim/lazy.py), so
``import aim`` is cheap; ``aim.FewShot`` then loads what it needs.
"""
import logging

from .lazy import lazy_exports

__version__ = "0.1.0"
logging.getLogger(__name__).addHandler(logging.NullHandler())

_EXPORTS = {
    "Answer": ".api", "FewShot": ".api",
    "Backbone": ".backbones", "Demo": ".backbones", "Virtual": ".backbones", "available": ".backbones",
    "load_backbone": ".backbones",
    "DemoBank": ".bank",
    "compress_demos": ".compress",
    "load_records": ".data.spec",
    "AimError": ".errors", "BackboneError": ".errors", "ImageError": ".errors",
    "Fuser": ".fusion", "FusionConfig": ".fusion", "load_fuser": ".fusion",
}
__all__ = sorted(_EXPORTS) + ["__version__"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
