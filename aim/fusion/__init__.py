"""The fuser: ``FusionConfig`` (config.py, plain data) and ``Fuser`` (model.py, the module), in the
peft manner of a config beside its model. Names are imported on first use (aim/lazy.py)."""
from ..lazy import lazy_exports

_EXPORTS = {
    "CONFIG_NAME": ".config", "WEIGHTS_NAME": ".config", "FUSER_KINDS": ".config", "TARGET_EMBEDDINGS": ".config",
    "TRAINED_FUSER": ".config", "FusionConfig": ".config",
    "Fuser": ".model", "describe": ".model", "identity_fuser": ".model", "load_fuser": ".model",
    "pool_tokens": ".model",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
