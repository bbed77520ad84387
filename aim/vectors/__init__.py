"""Vector methods, the field's other ways to stand in for demonstrations: small modules that act on
a frozen backbone's decoder layers through forward hooks, so any backbone works. ``VectorConfig``
and ``VectorTrainConfig`` (config.py, plain data), the shared module and its files (model.py), the
hooks (hooks.py), each method in its own file (live.py, mimic.py, mtv.py) and the trainer (train.py,
``aim train vectors``). Names are imported on first use (aim/lazy.py)."""
from ..lazy import lazy_exports

_EXPORTS = {
    "CONFIG_NAME": ".config", "WEIGHTS_NAME": ".config", "VECTOR_METHODS": ".config", "VectorConfig": ".config",
    "VectorTrainConfig": ".config",
    "VectorModule": ".model", "load_vectors": ".model",
    "LiveVectors": ".live", "TaskVectors": ".mtv", "HeadShifts": ".mimic",
    "decoder_layers": ".hooks",
    "train_vectors": ".train",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
