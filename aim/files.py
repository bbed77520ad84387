"""The toolkit's own files: written atomically (a temporary name, then a rename, so an interrupted
save never leaves half a file) and read back with one-line errors that name the file.

Nothing here unpickles: configs and manifests are JSON, tensors are safetensors.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict

from .errors import AimError


def write_json(path: str, obj) -> None:
    """JSON with indent 2 and sorted keys, written atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str, fix: str, error: type = AimError) -> dict:
    """A JSON object from ``path``; an ``error`` (an AimError) naming the file and ``fix`` when it is
    missing, not UTF-8, not JSON, or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise error(f"{path} is missing: {fix}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path} is not valid JSON ({err.__class__.__name__}: {err}): {fix}") from None
    except OSError as err:
        raise error(f"cannot read {path} ({err.strerror or err}): {fix}") from None
    if not isinstance(obj, dict):
        raise error(f"{path} holds a JSON {type(obj).__name__}, not an object: {fix}")
    return obj


def read_safetensors(path: str, fix: str, error: type = AimError) -> dict:
    """The tensors of a safetensors file; an ``error`` naming it and ``fix`` when it is not one."""
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except FileNotFoundError:
        raise error(f"{path} is missing: {fix}") from None
    except Exception as err:  # safetensors raises its own error types for files it cannot parse
        reason = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise error(f"{path} is not a readable safetensors file ({reason}): {fix}") from None


def load_weights(module, path: str, config_name: str, fix: str, error: type = AimError) -> None:
    """Load the safetensors file at ``path`` into ``module``; weights that do not fit the module its
    config (``config_name``) built are an ``error`` naming both files."""
    tensors = read_safetensors(path, fix, error)
    try:
        module.load_state_dict(tensors)
    except RuntimeError as err:  # missing, unexpected or mis-shaped tensors
        reason = str(err).strip().splitlines()[-1].strip()
        raise error(f"{path} does not fit {config_name} ({reason}): the two files come from different "
                    f"checkpoints; {fix}") from None


def save_module(folder: str, module, config, weights_name: str, config_name: str) -> None:
    """``module``'s weights (float32, CPU) and its dataclass ``config`` into ``folder``."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    weights = os.path.join(folder, weights_name)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()}, weights + ".tmp")
    os.replace(weights + ".tmp", weights)
    write_json(os.path.join(folder, config_name), asdict(config))


def sha256(path: str) -> str:
    """A file's SHA-256, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str, size: int = 12) -> str:
    """The first ``size`` hex digits of a file's SHA-256."""
    return sha256(path)[:size]


def write_bytes(path: str, data: bytes) -> str:
    """``data`` into ``path`` (a temporary name first); returns the SHA-256 of what was written."""
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
    return hashlib.sha256(data).hexdigest()
