"""The fuser, in the peft manner of a config beside its model: ``FusionConfig`` and
``FuserTrainConfig`` (config.py, plain data), ``Fuser`` (model.py, the module), its trainer
(train.py, ``aim train fuser``) and the trainer's closed-form start (align.py). Names are imported on
first use (aim/lazy.py)."""
from ..lazy import lazy_exports

_EXPORTS = {
    "CONFIG_NAME": ".config", "WEIGHTS_NAME": ".config", "FUSER_KINDS": ".config", "TARGET_EMBEDDINGS": ".config",
    "TRAINED_FUSER": ".config", "FusionConfig": ".config", "FuserTrainConfig": ".config", "OBJECTIVES": ".config",
    "train_fuser": ".train",
    "Fuser": ".model", "describe": ".model", "identity_fuser": ".model", "load_fuser": ".model",
    "pool_tokens": ".model",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
