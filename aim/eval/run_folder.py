"""The folder of one ``aim icl-eval`` run: its configuration and its samples, kept for resuming.

```
config.json            what the samples depend on (dataset, methods, shots, seeds, fingerprints, ...)
samples.jsonl          one line per answered (or skipped) prompt, appended and flushed batch by batch
samples.rank-R.jsonl   the same, written by process R of several (``accelerate launch``) while they run
results.json           figures aggregated from the samples (written by ``report``)
```

A rerun into the same folder with the same configuration skips every (method, shots, seed, record
id) already in the sample files; with another configuration it is an error that names the keys
that differ (unless no sample was written yet: then the new configuration replaces the old). A
last line cut short by a killed run is dropped on opening. Each process of several appends to its
own file, so no two ever write the same one; when a run ends, ``merge`` writes every sample into
``samples.jsonl`` in the plan's order (the order one uninterrupted process writes them in) and
removes the per-process files.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Iterable, Optional

from ..errors import AimError
from ..files import read_json, write_json
from ..fingerprints import differences

logger = logging.getLogger(__name__)

CONFIG = "config.json"
SAMPLES = "samples.jsonl"


def rank_samples(rank: int) -> str:
    return f"samples.rank-{rank}.jsonl"

SampleKey = tuple  # (method, shots, seed, record id)


def sample_key(sample: dict) -> SampleKey:
    return sample["method"], int(sample["shots"]), int(sample["seed"]), str(sample["id"])


def config_differences(old: dict, new: dict) -> list[str]:
    """Keys (dotted for nested dicts) whose values differ between two configurations."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in config_differences(a, b)]
        elif a != b:
            out.append(key)
    return out


class RunFolder:
    """``RunFolder(path, config)``: creates the folder, or checks that it holds the same run.
    ``rank`` of ``world`` processes: each appends to its own file; only rank 0 writes the config
    and repairs files (the others open the folder after it)."""

    def __init__(self, path: str, config: dict, rank: int = 0, world: int = 1):
        self.path = path
        self.config = config
        self.rank, self.world = rank, world
        os.makedirs(path, exist_ok=True)
        self.samples_path = os.path.join(path, SAMPLES)
        self.own_path = self.samples_path if world == 1 else os.path.join(path, rank_samples(rank))
        config_path = os.path.join(path, CONFIG)
        if os.path.isfile(config_path) and self._has_samples():
            old = read_json(config_path, "remove the run folder or pick another --run-id")
            new = json.loads(json.dumps(config))
            differ = config_differences(old, new)
            if "backbone.model" in differ and "model" not in differences(old.get("backbone"), new.get("backbone")):
                differ.remove("backbone.model")  # the same weights from another folder (fingerprints.py)
            changed = sorted({d.split(".")[0] for d in differ if d.startswith(("records", "pool_records"))})
            if changed:
                what = " and ".join("the demonstration pool" if c == "pool_records" else "the dataset" for c in changed)
                raise AimError(f"run folder {path}: {what} changed since this run started (its records' ids, texts or "
                               "images differ from those its samples were answered on): resuming would mix old and "
                               "new answers; restore the data, or start a new run with another --run-id")
            if differ:
                raise AimError(f"run folder {path} holds a run with another configuration (differs in "
                               f"{', '.join(differ)}): pick another --run-id (or --output), or rerun with the "
                               "same options to resume it")
        elif rank == 0:
            write_json(config_path, config)
        if rank == 0:
            for name in self.sample_files():
                self._repair(name)

    def sample_files(self) -> list[str]:
        """``samples.jsonl`` and every per-process file, the paths that exist."""
        names = [SAMPLES] + sorted(n for n in os.listdir(self.path) if n.startswith("samples.rank-")
                                   and n.endswith(".jsonl"))
        return [os.path.join(self.path, n) for n in names if os.path.isfile(os.path.join(self.path, n))]

    def _has_samples(self) -> bool:
        return any(os.path.getsize(p) > 0 for p in self.sample_files())

    def _repair(self, path: str) -> None:
        """Drop a last line that a killed run left without its newline."""
        if os.path.getsize(path) == 0:
            return
        with open(path, "rb+") as f:
            data = f.read()
            if data.endswith(b"\n"):
                return
            keep = data.rfind(b"\n") + 1
            logger.info("%s: dropping a last line cut short (%d bytes)", path, len(data) - keep)
            f.truncate(keep)

    def samples(self) -> list[dict]:
        """Every sample written so far (``samples.jsonl`` first, then the per-process files), each key once."""
        out, seen = [], set()
        for path in self.sample_files():
            with open(path) as f:
                for line in f:
                    if not line.strip():
                        continue
                    sample = json.loads(line)
                    key = sample_key(sample)
                    if key not in seen:  # a merge killed before it removed the per-process files
                        seen.add(key)
                        out.append(sample)
        return out

    def merge(self, order: list) -> None:
        """Write every sample into ``samples.jsonl`` in ``order`` (sample keys; others after, as they
        are), atomically, then remove the per-process files. Run by rank 0 alone, after the others."""
        rank = {key: i for i, key in enumerate(order)}
        samples = sorted(self.samples(), key=lambda s: rank.get(sample_key(s), len(rank)))
        lines = "".join(json.dumps(s, sort_keys=True) + "\n" for s in samples)
        tmp = self.samples_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.samples_path)
        for path in self.sample_files():
            if path != self.samples_path:
                os.remove(path)

    def done(self) -> dict[SampleKey, dict]:
        return {sample_key(s): s for s in self.samples()}

    def append(self, samples: Iterable[dict]) -> None:
        """Append one batch's samples and flush them to disk."""
        lines = "".join(json.dumps(s, sort_keys=True) + "\n" for s in samples)
        if not lines:
            return
        with open(self.own_path, "a") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def write_json(self, name: str, obj: Optional[dict]) -> str:
        path = self.file(name)
        write_json(path, obj)
        return path
