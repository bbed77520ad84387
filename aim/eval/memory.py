"""Peak memory of an evaluation, measured per batch.

- CUDA: ``torch.cuda.max_memory_allocated`` after each batch, the peak counter reset before it
  (memory held by tensors; the allocator's cache is not counted).
- CPU: growth of the process's peak resident set size (``resource.getrusage(...).ru_maxrss``)
  over its value when the measurement started. It is a high-water mark: a batch's figure includes
  whatever earlier batches needed, so it says what the evaluation needed at most, not what one
  method needs apart from the others.
"""
from __future__ import annotations

import sys

import torch

CUDA_KIND = "cuda_max_memory_allocated"
CPU_KIND = "cpu_peak_rss_growth"
DESCRIPTIONS = {
    CUDA_KIND: "torch.cuda.max_memory_allocated per batch (peak counter reset before each batch)",
    CPU_KIND: "growth of the process's peak resident memory (getrusage ru_maxrss) since the evaluation loop "
              "started; a high-water mark, so later cells include what earlier ones needed",
}


def _peak_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS reports bytes, Linux KiB


class PeakMemory:
    """``start()`` before a batch, ``read()`` after it: bytes (see the module docstring)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self.kind = CUDA_KIND if self.cuda else CPU_KIND
        self.baseline = 0 if self.cuda else _peak_rss_bytes()

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.kind]

    def start(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> int:
        if self.cuda:
            return int(torch.cuda.max_memory_allocated(self.device))
        return max(0, _peak_rss_bytes() - self.baseline)
