"""The pocket backbone, the embedded default: EfficientNet-Lite0 -> connector -> SmolLM2-135M-Instruct.

A plug-in that owns everything about it: the model (``model.py``), its vision tower and connector,
the packages its weights come from (``assets.py``), its training data (``episodes.py``), its two
trainers (``train_connector.py``: stage 1, captions; ``train_icl.py``: stage 2, interleaved
episodes) with their configurations (``config.py``), and the checkpoints that ship with it
(``checkpoints/``: connector, icl, fuser). The rest of the toolkit meets it only through the
backbone protocol (aim/backbones/base.py). Names are imported on first use (aim/lazy.py).
"""
from ...lazy import lazy_exports

_EXPORTS = {"PocketBackbone": ".model", "DEFAULT_CHECKPOINT": ".config", "DEFAULT_FUSER": ".config",
            "STAGE1_CONNECTOR": ".config", "CHECKPOINTS": ".config"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
