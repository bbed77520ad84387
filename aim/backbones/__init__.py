"""Frozen MLLMs behind one protocol (base.py), loaded by name, folder or hub id (registry.py); one
file per family (hf.py shared by the Hugging Face ones) and one folder for the pocket backbone.
Names are imported on first use (aim/lazy.py)."""
from ..lazy import lazy_exports

_EXPORTS = {name: ".base" for name in ("Backbone", "Demo", "DemoStates", "Encoded", "Generation", "Likelihood", "PromptBatch",
                                        "Virtual")}
_EXPORTS.update(available=".registry", load_backbone=".registry")
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
