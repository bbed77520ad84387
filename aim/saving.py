"""Writing small checkpoints in the peft manner: a JSON config and a safetensors file, each written
to a temporary name and renamed, so an interrupted save never leaves half a file."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict

from safetensors.torch import save_file
from torch import nn


def write_json(path: str, obj) -> None:
    """JSON with indent 2 and sorted keys, written atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_module(folder: str, module: nn.Module, config, weights_name: str, config_name: str) -> None:
    """``module``'s weights (float32, CPU) and its dataclass ``config`` into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    weights = os.path.join(folder, weights_name)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()}, weights + ".tmp")
    os.replace(weights + ".tmp", weights)
    write_json(os.path.join(folder, config_name), asdict(config))


def file_digest(path: str, size: int = 12) -> str:
    """The first ``size`` hex digits of a file's SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:size]
