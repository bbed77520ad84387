"""Where the toolkit keeps what it derives once and reuses: converted weights, cached features."""
from __future__ import annotations

import os


def cache_dir() -> str:
    """``$AIM_CACHE``, or ``~/.cache/aim``."""
    return os.environ.get("AIM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "aim")
