"""Compressing a pool of demonstrations into a DemoBank (what ``aim compress-demos`` runs).

Each shard is computed and committed whole: the backbone reads the demonstrations (image in
context), the fuser turns their text-position states into fused tokens, the retrieval keys are
computed, and the shard is appended atomically. Demonstrations already in the bank are skipped, so
a run killed at any point and started again ends with every demonstration exactly once.

Under ``accelerate launch`` with N processes (aim/processes.py), the shards still to do are dealt
out by rank (shard j to process j mod N, each shard the same batches one process would run); each
process commits its shards to its own manifest, and the main process merges those into the bank's
(at the end, and at the start of a run that follows a kill), so the bank holds the same fused tokens
and keys per demonstration as a one-process bank.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .backbones.base import Backbone, Demo
from .bank import DemoBank
from .data.record import Record
from .errors import AimError
from .fusion import Fuser
from .images import load_image
from .locking import FolderLock
from .processes import Processes, processes

logger = logging.getLogger(__name__)

KEY_KINDS = ("image", "text")


def image_ref(record: Record) -> str:
    """The source image path, or a hash of the pixels for in-memory images."""
    if isinstance(record.image, str):
        return record.image
    buf = io.BytesIO()
    record.image.save(buf, format="PNG")
    return "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()[:16]


def compress_demos(backbone: Backbone, fuser: Fuser, records: Sequence[Record], out: str, batch_size: int = 8,
                   shard_size: int = 64, keys: Sequence[str] = ("image",), progress: bool = True,
                   overwrite: bool = False, storage: str = "float32", procs: Processes | None = None) -> dict:
    """Fuse ``records`` into the bank at ``out`` (created or resumed); returns a summary. ``storage``:
    the number format of the fused tokens on disk (aim/storage.py). One writer at a time: the bank
    folder is locked while this runs (aim/locking.py)."""
    unknown = [k for k in keys if k not in KEY_KINDS]
    if unknown:
        raise AimError(f"unknown key kind(s) {', '.join(unknown)}: use {', '.join(KEY_KINDS)}")
    if not records:
        raise AimError("no demonstrations to compress (the dataset, or its --limit, gives 0 records): a bank needs "
                       "at least one")
    ids = [str(r.id) for r in records]
    if len(set(ids)) != len(ids):
        raise AimError("the dataset has repeated record ids; a bank needs one id per demonstration")
    fuser.check_backbone(backbone)
    procs = procs or processes()
    with FolderLock(out, "bank") if procs.main else contextlib.nullcontext():  # the main process holds it for all
        return _compress(backbone, fuser, records, out, batch_size, shard_size, keys, progress, overwrite, storage,
                         procs)


def _open(backbone, fuser, out, overwrite, storage, procs: Processes) -> DemoBank:
    """The bank, created or resumed by the main process (which first merges what the processes of a
    killed run committed), then opened by the others."""
    fingerprint = backbone.fingerprint(layer=fuser.config.layer)
    bank = None
    if procs.main:
        bank = DemoBank.create(out, fingerprint, fuser.fingerprint(), embed_size=fuser.config.embed_size,
                               overwrite=overwrite, storage=storage)
        merged = bank.commit_ranks()
        if merged:
            logger.info("%s: merged %d demonstrations that the processes of an interrupted run had written", out, merged)
    procs.wait()
    if not procs.main:
        bank = DemoBank.create(out, fingerprint, fuser.fingerprint(), embed_size=fuser.config.embed_size,
                               storage=storage)
    return bank


def _compress(backbone, fuser, records, out, batch_size, shard_size, keys, progress, overwrite, storage,
              procs: Processes) -> dict:
    bank = _open(backbone, fuser, out, overwrite, storage, procs)
    todo = [r for r in records if str(r.id) not in bank]
    logger.info("%s: %d demonstrations in the bank, %d to do", out, len(records) - len(todo), len(todo))
    shards = [todo[s:s + shard_size] for s in range(0, len(todo), shard_size)][procs.rank::procs.world]
    rank = procs.rank if procs.world > 1 else None
    embed_text = None
    if "text" in keys:
        from .retrieval import TextEmbedder

        embed_text = TextEmbedder()
    start = time.perf_counter()
    mine = sum(len(c) for c in shards)
    bar = tqdm(total=len(records) - len(todo) + mine, initial=len(records) - len(todo), desc="compress demos",
               unit="demo", disable=not progress or not procs.main)
    raw_tokens: list[int] = []
    for chunk in shards:
        fused, shard_keys = [], {k: [] for k in keys}
        for b in range(0, len(chunk), batch_size):
            part = chunk[b:b + batch_size]
            images = [load_image(r.image) for r in part]
            demos = [Demo(img, r.question, r.answer) for img, r in zip(images, part)]
            fused += [f.cpu() for f in fuser.fuse_demos(backbone, demos)]
            if "image" in keys:
                shard_keys["image"].append(backbone.image_features(images).cpu())
            if embed_text is not None:
                shard_keys["text"].append(embed_text([r.question for r in part]).cpu())
            if len(raw_tokens) < 16:  # what these demonstrations cost uncompressed, image tokens included
                raw = backbone.encode([[img, backbone.demo_text(d)] for img, d in zip(images, demos)], chat=False)
                raw_tokens += raw.lengths
            bar.update(len(part))  # tqdm's rate is demos/s
        metas = [{"question": r.question, "answers": list(r.answers), "image": image_ref(r)} for r in chunk]
        bank.append([str(r.id) for r in chunk], fused, metas, {k: torch.cat(v) for k, v in shard_keys.items()}, rank=rank)
    bar.close()
    if procs.world > 1:
        procs.wait()
        if procs.main:
            bank.commit_ranks()
        procs.wait()
        bank = DemoBank.open(out)
    seconds = time.perf_counter() - start
    return {
        "bank": out,
        "demos": len(bank),
        "added": len(todo),
        "fused_tokens_per_demo": bank.manifest["tokens"] / max(1, len(bank)),
        "raw_tokens_per_demo": (sum(raw_tokens) / len(raw_tokens)) if raw_tokens else None,
        "bank_bytes": bank.size_bytes(),
        "storage": bank.storage,
        "seconds": seconds,
        "demos_per_second": len(todo) / seconds if seconds > 0 else None,
        "processes": procs.world,
        "keys": list(keys),
    }

