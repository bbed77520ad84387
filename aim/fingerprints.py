"""Comparing backbone fingerprints (``Backbone.fingerprint``) recorded by fusers, vectors and banks.

A fingerprint names the model (its short name, folder or hub id) and a revision. Where the
revision is a digest of the weights themselves (the pocket's checkpoints), the same weights loaded
from another folder (a checkpoint copied or moved) are the same backbone; elsewhere the revision is
a hub revision (or none), and the model id is what tells two models apart.
"""
from __future__ import annotations

from typing import Optional

#: families whose ``revision()`` is a digest of the checkpoint files
WEIGHT_DIGEST_FAMILIES = frozenset({"pocket"})


def changed_keys(a: Optional[dict], b: Optional[dict]) -> list[str]:
    """Sorted keys whose values differ between two flat dicts (a missing key counts as None)."""
    a, b = a or {}, b or {}
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def differences(recorded: Optional[dict], current: Optional[dict]) -> list[str]:
    """Sorted keys in which two backbone fingerprints differ (an empty list: the same backbone)."""
    a, b = recorded or {}, current or {}
    differ = changed_keys(a, b)
    same_weights = (b.get("family") in WEIGHT_DIGEST_FAMILIES and bool(b.get("revision"))
                    and a.get("revision") == b.get("revision"))
    return [k for k in differ if not (k == "model" and same_weights)]
