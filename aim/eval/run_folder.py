"""The folder of one ``aim icl-eval`` run: its configuration and its samples, kept for resuming.

```
config.json     what the samples depend on (dataset, methods, shots, seeds, fingerprints, ...)
samples.jsonl   one line per answered (or skipped) prompt, appended and flushed batch by batch
results.json    figures aggregated from the samples (written by ``report``)
```

A rerun into the same folder with the same configuration skips every (method, shots, seed, record
id) already in ``samples.jsonl``; with another configuration it is an error that names the keys
that differ (unless no sample was written yet: then the new configuration replaces the old). A
last line cut short by a killed run is dropped on opening.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Iterable, Optional

from ..errors import AimError
from ..files import read_json, write_json

logger = logging.getLogger(__name__)

CONFIG = "config.json"
SAMPLES = "samples.jsonl"

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
    """``RunFolder(path, config)``: creates the folder, or checks that it holds the same run."""

    def __init__(self, path: str, config: dict):
        self.path = path
        self.config = config
        os.makedirs(path, exist_ok=True)
        self.samples_path = os.path.join(path, SAMPLES)
        config_path = os.path.join(path, CONFIG)
        if os.path.isfile(config_path) and self._has_samples():
            old = read_json(config_path, "remove the run folder or pick another --run-id")
            differ = config_differences(old, json.loads(json.dumps(config)))
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
        else:
            write_json(config_path, config)
        self._repair()

    def _has_samples(self) -> bool:
        return os.path.isfile(self.samples_path) and os.path.getsize(self.samples_path) > 0

    def _repair(self) -> None:
        """Drop a last line that a killed run left without its newline."""
        if not os.path.isfile(self.samples_path) or os.path.getsize(self.samples_path) == 0:
            return
        with open(self.samples_path, "rb+") as f:
            data = f.read()
            if data.endswith(b"\n"):
                return
            keep = data.rfind(b"\n") + 1
            logger.info("%s: dropping a last line cut short (%d bytes)", self.samples_path, len(data) - keep)
            f.truncate(keep)

    def samples(self) -> list[dict]:
        """Every sample written so far, in order."""
        if not os.path.isfile(self.samples_path):
            return []
        with open(self.samples_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def done(self) -> dict[SampleKey, dict]:
        return {sample_key(s): s for s in self.samples()}

    def append(self, samples: Iterable[dict]) -> None:
        """Append one batch's samples and flush them to disk."""
        lines = "".join(json.dumps(s, sort_keys=True) + "\n" for s in samples)
        if not lines:
            return
        with open(self.samples_path, "a") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def write_json(self, name: str, obj: Optional[dict]) -> str:
        path = self.file(name)
        write_json(path, obj)
        return path
