"""What every vector method's module shares: its config, attaching it to a backbone for a block of
code, ``save_pretrained`` / ``from_pretrained`` in the peft manner (``vector_config.json`` +
``vector_model.safetensors``) and the refusal of another backbone."""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import fields
from typing import Iterator

from torch import nn

from ..errors import AimError, ConfigError, VectorMismatchError
from ..fingerprints import differences
from ..files import file_digest, load_weights, read_json, save_module
from .config import CONFIG_NAME, VECTOR_METHODS, WEIGHTS_NAME, VectorConfig, vector_fingerprint
from .hooks import attention_heads, decoder_layers, forward_hooks, head_outputs

logger = logging.getLogger(__name__)

FIX = "train vectors for this backbone with `aim train vectors`"


def describe(fingerprint) -> str:
    if not fingerprint:
        return "unknown (no fingerprint recorded)"
    return (f"{fingerprint.get('family')} (model {fingerprint.get('model')}, revision {fingerprint.get('revision')}, "
            f"dtype {fingerprint.get('dtype')}, hidden {fingerprint.get('hidden_size')})")


class VectorModule(nn.Module):
    """A small trainable (or computed) module that acts on a frozen backbone through forward hooks
    on its decoder layers. Subclasses give ``layer_hooks(layers)``: one hook per layer."""

    def __init__(self, config: VectorConfig):
        super().__init__()
        unbound = config.hidden_size is None or config.num_layers is None
        if unbound or (self.on_heads and (config.num_heads is None or config.head_dim is None)):
            raise ConfigError(f"this VectorConfig is not bound to a backbone (its sizes are unset): build the module with "
                              f"{type(self).__name__}.for_backbone(backbone, config)")
        self.config = config
        self.source = None  # the folder it was loaded from, for messages

    @classmethod
    def for_backbone(cls, backbone, config: VectorConfig = None) -> "VectorModule":
        heads, head_dim = attention_heads(backbone) if cls.on_heads else (None, None)
        config = (config or VectorConfig()).bind(backbone, len(decoder_layers(backbone)), heads, head_dim)
        return cls(config).to(backbone.device)

    #: True: the hooks are forward pre-hooks on each layer's attention output projection (they see the
    #: heads' outputs); False: forward hooks on the decoder layers (they see each layer's output)
    on_heads = False

    def layer_hooks(self, layers: list) -> list:
        """One hook per decoder layer (see ``on_heads``)."""
        raise NotImplementedError

    def layers_of(self, backbone) -> list:
        """The backbone's decoder layers, refused when they are not as many as these vectors have."""
        layers = decoder_layers(backbone)
        if len(layers) != self.config.num_layers:
            raise VectorMismatchError(f"vectors {self.source or ''} have {self.config.num_layers} layers; backbone "
                                      f"{backbone.model_id} has {len(layers)}: {FIX}")
        return layers

    @contextlib.contextmanager
    def attached(self, backbone) -> Iterator[None]:
        """The backbone runs with these vectors inside the block; its hooks are removed on leaving it
        (an exception included), so the backbone is as it was."""
        layers = self.layers_of(backbone)
        modules = head_outputs(backbone) if self.on_heads else layers
        with forward_hooks(modules, self.layer_hooks(layers), pre=self.on_heads):
            yield

    def fingerprint(self) -> dict:
        """What a run records of the vectors it used: method, layers, folder and a digest of the weights."""
        weights = os.path.join(self.source, WEIGHTS_NAME) if self.source else None
        return {"method": self.config.method, "num_layers": self.config.num_layers, "source": self.source,
                "weights": file_digest(weights) if weights and os.path.isfile(weights) else None,
                "shots": (self.config.training or {}).get("shots")}

    def check_backbone(self, backbone) -> None:
        """Raise VectorMismatchError when ``backbone`` is not the one these vectors were made for."""
        name = self.source or "(in memory)"
        if self.config.hidden_size != backbone.hidden_size:
            raise VectorMismatchError(f"vectors {name} expect hidden size {self.config.hidden_size}; backbone "
                                      f"{backbone.model_id} has {backbone.hidden_size}: {FIX}")
        recorded, current = self.config.backbone, vector_fingerprint(backbone)
        differ = differences(recorded, current) if recorded is not None else []
        if differ:
            raise VectorMismatchError(f"vectors {name} were made for backbone {describe(recorded)}; this backbone is "
                                      f"{describe(current)} (differs in {', '.join(differ)}): {FIX}")

    def save_pretrained(self, folder: str) -> None:
        save_module(folder, self, self.config, WEIGHTS_NAME, CONFIG_NAME)


def method_class(method: str) -> type:
    from .live import LiveVectors
    from .mimic import HeadShifts
    from .mtv import TaskVectors

    return {"live": LiveVectors, "mimic": HeadShifts, "mtv": TaskVectors}[method]


def load_vectors(folder: str, backbone=None) -> VectorModule:
    """Read a vector folder (any method); with ``backbone``, refuse one made for another backbone."""
    if not os.path.isdir(folder):
        raise AimError(f"vector folder {folder} does not exist: {FIX}")
    raw = read_json(os.path.join(folder, CONFIG_NAME), FIX)
    unknown = sorted(set(raw) - {f.name for f in fields(VectorConfig)})
    if unknown:
        raise AimError(f"{os.path.join(folder, CONFIG_NAME)} has unknown fields {', '.join(unknown)}: it was "
                       "written by a newer aim; upgrade aim")
    if raw.get("method") not in VECTOR_METHODS:
        raise AimError(f"{os.path.join(folder, CONFIG_NAME)}: unknown method {raw.get('method')!r} (this aim knows "
                       f"{', '.join(VECTOR_METHODS)})")
    try:
        config = VectorConfig(**raw)
    except ConfigError as e:
        raise ConfigError(f"{os.path.join(folder, CONFIG_NAME)} is invalid: {e}") from e
    module = method_class(config.method)(config)
    module.source = folder
    load_weights(module, os.path.join(folder, WEIGHTS_NAME), CONFIG_NAME, FIX)
    if backbone is not None:
        module.check_backbone(backbone)
        module.to(backbone.device)
    logger.info("loaded %s vectors from %s (made for %s)", config.method, folder, describe(config.backbone))
    return module
