"""How a demo bank stores fused tokens on disk: the number format, chosen when the bank is built.

- ``float32``: as computed (4 bytes a value; the default, and what banks before this option hold);
- ``float16``: 2 bytes; refused for tokens beyond float16's range (65,504), which bfloat16 keeps;
- ``bfloat16``: 2 bytes, float32's range with 8 bits of mantissa;
- ``int8``: 1 byte a value plus one float32 scale per token (symmetric, absmax / 127 per token).
Every format decodes to float32 when read. ``roundtrip`` applies a format's loss to tokens that never
touch a bank (fused on the fly), so its effect on accuracy can be measured alone.
"""
from __future__ import annotations

import torch

from .errors import BankError

STORAGES = ("float32", "float16", "bfloat16", "int8")
_FLOATS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FLOAT16_MAX = 65504.0


def check_storage(storage: str) -> str:
    if storage not in STORAGES:
        raise BankError(f"bank storage {storage!r}: use one of {', '.join(STORAGES)}")
    return storage


def encode(tokens: torch.Tensor, storage: str) -> dict[str, torch.Tensor]:
    """(T, D) float tokens -> the tensors a shard holds: ``tokens`` (and ``scales`` (T,) for int8)."""
    check_storage(storage)
    x = tokens.detach().float().cpu()
    if storage in _FLOATS:
        if storage == "float16" and x.numel() and float(x.abs().max()) > FLOAT16_MAX:
            raise BankError(f"fused tokens reach {float(x.abs().max()):.4g}, beyond float16's range: build the bank "
                            "with --storage bfloat16 (same size, float32's range) or float32")
        return {"tokens": x.to(_FLOATS[storage]).contiguous()}
    scales = x.abs().amax(dim=1) / 127.0
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.round(x / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return {"tokens": q.contiguous(), "scales": scales.contiguous()}


def decode(tokens: torch.Tensor, scales: torch.Tensor | None, storage: str) -> torch.Tensor:
    """The stored rows back as float32 (T, D)."""
    if storage == "int8":
        return tokens.float() * scales.float()[:, None]
    return tokens.float()


def roundtrip(tokens: torch.Tensor, storage: str) -> torch.Tensor:
    """``tokens`` as a bank of this storage would give them back (float32, on their device)."""
    parts = encode(tokens, storage)
    return decode(parts["tokens"], parts.get("scales"), storage).to(tokens.device)


def bytes_per_value(storage: str) -> int:
    return {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}[check_storage(storage)]
