"""DemoBank: fused tokens of many demonstrations, computed once and kept on disk.

A bank is a folder:

```
bank.json                 manifest: format version, backbone and fuser fingerprints, counts, shards
shard-00000.safetensors   "tokens" (sum of T_i, hidden) fused tokens of the shard's demos, concatenated, in
                          the bank's storage format (aim/storage.py: float32, float16, bfloat16, or int8
                          with "scales" (sum of T_i,) float32, one per token); "offsets" (n + 1,) int64
                          row offsets; "keys.<kind>" (n, d) float32 retrieval keys
shard-00000.jsonl         one line per demo: id, question, answers, image (path or hash), extra
index.image.faiss         a FAISS index over one kind of key (written by aim.FewShot, listed in the
                          manifest with the count it covers); its ids are bank positions 0..N-1
```

Appending is atomic: the manifest first names the files an append is about to write
(``pending``), the shard's two files are written under temporary names and renamed, then the
manifest is rewritten with the shard listed; that rewrite is the commit point. Files of an append
that was killed (named in ``pending``, not committed) are removed by the next writer, and no other
file is ever deleted, so a killed run started again ends with every demonstration exactly once.
Each shard's files carry a SHA-256 in the manifest, checked the first time the shard is read (and
every index file's, when it is opened); fused tokens must be finite. Reading is lazy: shards are
opened with ``safe_open`` (memory-mapped) and only the rows asked for are read, so a bank larger
than memory still serves queries. Writers hold the folder's lock (aim/locking.py).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Optional, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from .errors import BankError
from .files import read_json, sha256, write_bytes, write_json
from .fingerprints import changed_keys, differences
from .locking import LOCK_NAME
from .storage import check_storage, decode, encode

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "bank.json"
FUSER_FOLDER = "fuser"  # compress-demos --fit-on-pool: the fuser fitted on the pool, kept with its bank
REBUILD = "rebuild the bank with `aim compress-demos`"


def rank_manifest(rank: int) -> str:
    """The manifest of the shards one of several processes has written and not yet merged."""
    return f"bank.rank-{rank}.json"


def _describe(fp: Optional[dict]) -> str:
    if not fp:
        return "none"
    return ", ".join(f"{k}={fp[k]}" for k in sorted(fp))


class DemoBank:
    """Open with ``DemoBank.open`` (existing) or ``DemoBank.create`` (new or resumed)."""

    def __init__(self, folder: str, manifest: dict):
        self.folder = folder
        self.manifest = manifest
        self._handles: dict[str, object] = {}
        self._index: Optional[dict[str, tuple[int, int]]] = None  # id -> (shard, row)
        self._meta: Optional[list[list[dict]]] = None
        self._verified: set[str] = set()  # files whose hash was checked in this process
        self._key_maps: dict[str, list[np.ndarray]] = {}  # kind -> each shard's keys, memory-mapped

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, folder: str, backbone: dict, fuser: dict, embed_size: int, overwrite: bool = False,
               storage: str = "float32") -> "DemoBank":
        """A new bank of fused tokens of width ``embed_size`` (the LLM's input-embedding size) stored
        as ``storage`` (aim/storage.py), or the existing one at ``folder`` when it was made with the
        same backbone, fuser and storage (resuming); files of an interrupted append are removed. A
        folder that holds files but no bank is refused unless ``overwrite`` (its files are then left
        as they are, and a shard of the same name replaced)."""
        check_storage(storage)
        if os.path.isfile(os.path.join(folder, MANIFEST)):
            bank = cls.open(folder, backbone=backbone, fuser=fuser)
            if bank.storage != storage:
                raise BankError(f"bank {folder} stores fused tokens as {bank.storage}; this run asks for {storage}: "
                                f"resume with --storage {bank.storage}, or build another bank")
            bank._remove_orphans()
            return bank
        mine = (LOCK_NAME, FUSER_FOLDER)  # the lock, and a fuser fitted on this very pool (--fit-on-pool)
        others = sorted(n for n in os.listdir(folder) if n not in mine) if os.path.isdir(folder) else []
        if others and not overwrite:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise BankError(f"{folder} is not empty ({shown}) and is not a demo bank (no {MANIFEST}): give an empty "
                            "or new folder to --out, or pass --overwrite to build the bank there anyway (its files "
                            "are kept)")
        os.makedirs(folder, exist_ok=True)
        manifest = {"format_version": FORMAT_VERSION, "backbone": backbone, "fuser": fuser,
                    "embed_size": embed_size, "storage": storage, "count": 0, "tokens": 0, "shards": []}
        write_json(os.path.join(folder, MANIFEST), manifest)
        bank = cls(folder, manifest)
        bank._remove_orphans()
        return bank

    @classmethod
    def open(cls, folder: str, backbone: Optional[dict] = None, fuser: Optional[dict] = None) -> "DemoBank":
        """Open a bank; with ``backbone`` / ``fuser`` fingerprints given, refuse a bank made with others."""
        path = os.path.join(folder, MANIFEST)
        if not os.path.isfile(path):
            raise BankError(f"{folder} is not a demo bank: {MANIFEST} is missing "
                            "(build one with `aim compress-demos --out FOLDER`)")
        manifest = read_json(path, REBUILD, BankError)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BankError(f"{folder}: bank format {manifest.get('format_version')}, this aim reads {FORMAT_VERSION}")
        fix = "build a bank for it with `aim compress-demos`"
        differ = differences(manifest["backbone"], backbone) if backbone is not None else []
        if differ:
            if differ == ["layer"]:  # the backbone is the same: the fuser reads another layer
                raise BankError(f"bank {folder} holds fused tokens made from layer {manifest['backbone'].get('layer')} "
                                f"states; this fuser reads layer {backbone.get('layer')}: use the fuser the bank was "
                                f"built with, or {fix}")
            raise BankError(f"bank {folder} was built with backbone [{_describe(manifest['backbone'])}]; this pipeline "
                            f"uses [{_describe(backbone)}] (differs in {', '.join(differ)}): {fix}")
        if fuser is not None and manifest["fuser"] != fuser:
            changed = ", ".join(changed_keys(manifest["fuser"], fuser))
            raise BankError(f"bank {folder} was built with fuser [{_describe(manifest['fuser'])}]; this pipeline "
                            f"uses [{_describe(fuser)}] (differs in {changed}): {fix}")
        bank = cls(folder, manifest)
        bank._check_shards()
        return bank

    def _check_shards(self) -> None:
        """Every listed file is there with its size (cheap; contents are checked on first read)."""
        for shard in self.manifest["shards"]:
            for name, size in ((shard["file"], shard["bytes"]), (shard["meta"], shard["meta_bytes"])):
                path = os.path.join(self.folder, name)
                if not os.path.isfile(path):
                    raise BankError(f"bank {self.folder}: {name} is missing; {REBUILD}")
                actual = os.path.getsize(path)
                if actual != size:
                    raise BankError(f"bank {self.folder}: {name} is truncated or damaged ({actual} bytes, the manifest "
                                    f"says {size}); {REBUILD}")

    def _check_content(self, name: str, expected: Optional[str]) -> None:
        """The file's SHA-256 against the manifest's (banks written before hashes were kept have none)."""
        if expected is not None and sha256(os.path.join(self.folder, name)) != expected:
            raise BankError(f"bank {self.folder}: {name} does not hold what the manifest recorded (its SHA-256 "
                            f"differs: swapped, edited or damaged); {REBUILD}")

    def _check_once(self, name: str, expected: Optional[str]) -> None:
        """``_check_content`` the first time this process reads the file."""
        if name not in self._verified:
            self._check_content(name, expected)
            self._verified.add(name)

    def verify(self) -> None:
        """Check every shard's files against the manifest's hashes now (reads the whole bank)."""
        for shard in self.manifest["shards"]:
            self._check_content(shard["file"], shard.get("sha256"))
            self._check_content(shard["meta"], shard.get("meta_sha256"))

    def _remove_orphans(self) -> None:
        """Delete what a killed append left: the files a manifest (the bank's, or a rank's) names as
        pending and no manifest lists, nothing else."""
        shards = list(self.manifest["shards"])
        ranks = {name: read_json(os.path.join(self.folder, name), REBUILD, BankError) for name in self.rank_manifests()}
        for own in ranks.values():
            shards += own["shards"]
        listed = {s["file"] for s in shards} | {s["meta"] for s in shards}
        for name, own in ranks.items():
            for orphan in [n for n in own.get("pending") or [] if n not in listed] + [name + ".tmp"]:
                if os.path.isfile(os.path.join(self.folder, orphan)):
                    logger.info("removing %s, left by an interrupted append", orphan)
                    os.remove(os.path.join(self.folder, orphan))
            if own.get("pending"):
                write_json(os.path.join(self.folder, name), {"shards": own["shards"]})
        pending = [n for n in self.manifest.get("pending") or [] if n not in listed] + [MANIFEST + ".tmp"]
        for name in pending:
            path = os.path.join(self.folder, name)
            if os.path.isfile(path):
                logger.info("removing %s, left by an interrupted append", name)
                os.remove(path)
        if self.manifest.get("pending"):
            self.manifest = {k: v for k, v in self.manifest.items() if k != "pending"}
            write_json(os.path.join(self.folder, MANIFEST), self.manifest)

    # ------------------------------------------------------------------ writing
    def append(self, ids: Sequence[str], fused: Sequence[torch.Tensor], metas: Sequence[dict],
               keys: Optional[dict[str, torch.Tensor]] = None, rank: Optional[int] = None) -> None:
        """Add one shard: ``fused`` (tokens_i, hidden) per demo, ``keys`` kind -> (n, d). ``rank``: one
        of several processes filling the bank at once; its shard is committed to its own manifest
        (``bank.rank-R.json``), which ``commit_ranks`` merges into the bank's."""
        if not ids:
            return
        if self._index is None:
            self._build_index()
        dup = [i for i in ids if str(i) in self._index]
        if dup or len(set(map(str, ids))) != len(ids):
            raise BankError(f"bank {self.folder}: demo ids already present or repeated: {dup[:5] or 'in this batch'}")
        width = self.embed_size
        for i, f in zip(ids, fused):
            if f.dim() != 2 or f.shape[1] != width:
                raise BankError(f"demo {i}: fused tokens of shape {tuple(f.shape)}, the bank holds (tokens, {width})")
            if not bool(torch.isfinite(f).all()):
                raise BankError(f"demo {i}: its fused tokens hold NaN or infinite values; the fuser or the backbone "
                                "produced them (check the fuser's weights, or use float32): nothing was written")
        for kind, k in (keys or {}).items():
            if not bool(torch.isfinite(k).all()):
                raise BankError(f"the {kind} keys of this shard hold NaN or infinite values: nothing was written")
        lengths = torch.tensor([0] + [f.shape[0] for f in fused], dtype=torch.int64)
        tensors = dict(encode(torch.cat([f.detach().float().cpu() for f in fused]), self.storage),
                       offsets=lengths.cumsum(0))
        kinds = sorted((keys or {}).keys())
        known = self.manifest.get("key_kinds")
        if known is not None and kinds != known:
            raise BankError(f"bank {self.folder} holds keys {known}; this append brings {kinds}")
        for kind, k in (keys or {}).items():
            tensors[f"keys.{kind}"] = k.detach().float().cpu().contiguous()
        if rank is None:
            manifest_name, stem = MANIFEST, f"shard-{len(self.manifest['shards']):05d}"
            own = self.manifest
        else:
            manifest_name, own = rank_manifest(rank), self._rank_manifest(rank)
            taken = {sh["file"] for sh in self.manifest["shards"] + own["shards"]}
            number = sum(1 for f in taken if f.startswith(f"shard-r{rank}-"))
            stem = f"shard-r{rank}-{number:05d}"
        name, meta_name = stem + ".safetensors", stem + ".jsonl"
        path, meta_path = os.path.join(self.folder, name), os.path.join(self.folder, meta_name)
        pending = [name + ".tmp", meta_name + ".tmp", name, meta_name]
        write_json(os.path.join(self.folder, manifest_name), dict(own, pending=pending))  # what may be left
        data = save(tensors)
        lines = "".join(json.dumps({"id": str(i), **m}) + "\n" for i, m in zip(ids, metas)).encode("utf-8")
        digest, meta_digest = write_bytes(path, data), write_bytes(meta_path, lines)  # hashed as written
        shard = {"file": name, "meta": meta_name, "count": len(ids), "tokens": int(lengths.sum()),
                 "bytes": len(data), "meta_bytes": len(lines), "sha256": digest, "meta_sha256": meta_digest,
                 "key_kinds": kinds}
        self._verified |= {name, meta_name}  # just written: no need to read them back
        if rank is not None:
            write_json(os.path.join(self.folder, manifest_name), {"shards": own["shards"] + [shard]})  # its commit
            for i in ids:
                self._index[str(i)] = (-1, -1)  # in the bank once the main process merges this rank's shards
            return
        number = len(self.manifest["shards"])
        manifest = dict(self.manifest, shards=self.manifest["shards"] + [shard],
                        count=self.manifest["count"] + len(ids), tokens=self.manifest["tokens"] + shard["tokens"],
                        key_kinds=kinds)
        write_json(os.path.join(self.folder, MANIFEST), manifest)  # the commit point
        self.manifest = manifest
        for row, i in enumerate(ids):
            self._index[str(i)] = (number, row)
        if self._meta is not None:
            self._meta.append([{"id": str(i), **m} for i, m in zip(ids, metas)])

    def _rank_manifest(self, rank: int) -> dict:
        path = os.path.join(self.folder, rank_manifest(rank))
        return read_json(path, REBUILD, BankError) if os.path.isfile(path) else {"shards": []}

    def rank_manifests(self) -> list[str]:
        """The per-rank manifests in the folder (left by several processes, not merged yet)."""
        return sorted(n for n in os.listdir(self.folder) if n.startswith("bank.rank-") and n.endswith(".json"))

    def commit_ranks(self) -> int:
        """Merge every per-rank manifest's shards into the bank's manifest (one commit), in rank order,
        then remove the per-rank manifests; returns how many demonstrations were added. Run by one
        process while no other writes (the main process, after the others have finished)."""
        added, shards = 0, list(self.manifest["shards"])
        listed = {sh["file"] for sh in shards}
        kinds = self.manifest.get("key_kinds")
        for name in sorted(self.rank_manifests(), key=lambda n: int(n[len("bank.rank-"):-len(".json")])):
            for shard in read_json(os.path.join(self.folder, name), REBUILD, BankError)["shards"]:
                if shard["file"] in listed:
                    continue  # merged before a kill left the rank manifest behind
                if kinds is not None and shard["key_kinds"] != kinds:
                    raise BankError(f"bank {self.folder}: {shard['file']} holds keys {shard['key_kinds']}, the bank "
                                    f"{kinds}; {REBUILD}")
                kinds = shard["key_kinds"]
                shards.append(shard)
                listed.add(shard["file"])
                added += shard["count"]
        if added:
            manifest = dict(self.manifest, shards=shards, count=sum(sh["count"] for sh in shards),
                            tokens=sum(sh["tokens"] for sh in shards), key_kinds=kinds)
            write_json(os.path.join(self.folder, MANIFEST), manifest)  # the commit point
            self.manifest = manifest
            self._index = self._meta = None
            self._check_shards()
        for name in self.rank_manifests():
            os.remove(os.path.join(self.folder, name))
        return added

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return self.manifest["count"]

    @property
    def backbone(self) -> dict:
        return self.manifest["backbone"]

    @property
    def embed_size(self) -> int:
        """The width of the fused tokens (banks of the first release call it hidden_size)."""
        return self.manifest.get("embed_size") or self.manifest["hidden_size"]

    @property
    def fuser(self) -> dict:
        return self.manifest["fuser"]

    @property
    def storage(self) -> str:
        """How fused tokens are stored (banks made before the option hold float32)."""
        return self.manifest.get("storage", "float32")

    def _handle(self, shard: int):
        entry = self.manifest["shards"][shard]
        name = entry["file"]
        if name not in self._handles:
            self._check_once(name, entry.get("sha256"))
            try:
                self._handles[name] = safe_open(os.path.join(self.folder, name), framework="pt")
            except Exception as err:  # safetensors raises its own error types for damaged files
                raise BankError(f"bank {self.folder}: cannot read {name} ({err}); {REBUILD}") from None
        return self._handles[name]

    def _build_index(self) -> None:
        self._meta = []
        self._index = {}
        for number, shard in enumerate(self.manifest["shards"]):
            self._check_once(shard["meta"], shard.get("meta_sha256"))
            try:
                with open(os.path.join(self.folder, shard["meta"]), encoding="utf-8") as f:
                    rows = [json.loads(line) for line in f if line.strip()]
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise BankError(f"bank {self.folder}: {shard['meta']} is damaged ({err}); {REBUILD}") from None
            self._meta.append(rows)
            for row, m in enumerate(rows):
                self._index[m["id"]] = (number, row)

    def ids(self) -> list[str]:
        """Every demo id, in bank order."""
        if self._meta is None:
            self._build_index()
        return [m["id"] for rows in self._meta for m in rows]

    def __contains__(self, demo_id) -> bool:
        if self._index is None:
            self._build_index()
        return str(demo_id) in self._index

    def meta(self, demo_id) -> dict:
        shard, row = self._locate(demo_id)
        return self._meta[shard][row]

    def _locate(self, demo_id) -> tuple[int, int]:
        if self._index is None:
            self._build_index()
        try:
            return self._index[str(demo_id)]
        except KeyError:
            raise BankError(f"demo {demo_id!r} is not in bank {self.folder}") from None

    def fused(self, demo_id) -> torch.Tensor:
        """(tokens, hidden) fused tokens of one demonstration, read from disk on demand."""
        shard, row = self._locate(demo_id)
        handle = self._handle(shard)
        offsets = handle.get_slice("offsets")[row:row + 2]
        start, end = int(offsets[0]), int(offsets[1])
        scales = handle.get_slice("scales")[start:end] if self.storage == "int8" else None
        return decode(handle.get_slice("tokens")[start:end], scales, self.storage)

    def keys(self, kind: str) -> tuple[torch.Tensor, list[str]]:
        """All keys of one kind (N, d) with their demo ids, in bank order."""
        if kind not in (self.manifest.get("key_kinds") or []):
            raise BankError(f"bank {self.folder} has no {kind!r} keys (it has {self.manifest.get('key_kinds')})")
        parts = [self._handle(n).get_tensor(f"keys.{kind}") for n in range(len(self.manifest["shards"]))]
        return torch.cat(parts), self.ids()

    def key_rows(self, kind: str, positions) -> np.ndarray:
        """Keys of one kind at bank positions (M,) -> (M, d) float32, in the order asked. Only those
        rows are read (the shards' key tensors are memory-mapped), so an IVF-PQ index re-ranks its
        candidates by exact keys without holding every key in memory."""
        if kind not in (self.manifest.get("key_kinds") or []):
            raise BankError(f"bank {self.folder} has no {kind!r} keys (it has {self.manifest.get('key_kinds')})")
        maps = self._key_maps.setdefault(kind, [])  # shards are only ever added at the end
        maps += [self._key_map(n, kind) for n in range(len(maps), len(self.manifest["shards"]))]
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        starts = np.cumsum([0] + [len(m) for m in maps])
        if len(positions) and (positions.min() < 0 or positions.max() >= starts[-1]):
            raise BankError(f"bank {self.folder} holds {starts[-1]} demonstrations; positions must lie in "
                            f"0..{starts[-1] - 1}, got {positions.min()}..{positions.max()}")
        width = maps[0].shape[1] if maps else 0
        out = np.empty((len(positions), width), np.float32)
        ordered = bool(np.all(positions[1:] >= positions[:-1]))
        order = None if ordered else np.argsort(positions, kind="stable")
        sorted_positions = positions if ordered else positions[order]
        bounds = np.searchsorted(sorted_positions, starts)  # each shard's rows are one run of them
        for n, rows in enumerate(maps):
            lo, hi = bounds[n], bounds[n + 1]
            if lo < hi:
                where = slice(lo, hi) if ordered else order[lo:hi]
                out[where] = rows[sorted_positions[lo:hi] - starts[n]]
        return out

    def _key_map(self, shard: int, kind: str) -> np.ndarray:
        """A read-only memory map of one shard's ``keys.<kind>`` tensor (safetensors layout: an
        8-byte little-endian header length, a JSON header with each tensor's dtype, shape and byte
        range, then the data)."""
        self._handle(shard)  # the shard's SHA-256 is checked on its first read
        path = os.path.join(self.folder, self.manifest["shards"][shard]["file"])
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            entry = json.loads(f.read(size)).get(f"keys.{kind}")
        if entry is None or entry["dtype"] != "F32" or len(entry["shape"]) != 2:
            raise BankError(f"bank {self.folder}: {path} holds no float32 keys.{kind} matrix; {REBUILD}")
        begin, _ = entry["data_offsets"]
        if entry["shape"][0] == 0:
            return np.zeros(tuple(entry["shape"]), np.float32)
        mapped = np.memmap(path, dtype="<f4", mode="r", offset=8 + size + begin, shape=tuple(entry["shape"]))
        return mapped.view(np.ndarray)  # the same mapping, without memmap's per-index overhead

    # ------------------------------------------------------------------ retrieval indexes
    def index_path(self, kind: str) -> Optional[str]:
        """The index file over ``kind`` keys that the manifest lists for the bank as it is now, or
        None (never built, or built before the bank grew)."""
        entry = (self.manifest.get("indexes") or {}).get(kind)
        if entry is None or entry["count"] != len(self):
            return None
        path = os.path.join(self.folder, entry["file"])
        if not os.path.isfile(path):
            return None
        if entry.get("sha256") is not None and sha256(path) != entry["sha256"]:
            raise BankError(f"bank {self.folder}: {entry['file']} does not hold the index the manifest recorded (its "
                            "SHA-256 differs: edited or damaged); delete it and it is built again from the bank's keys")
        return path

    def record_index(self, kind: str, file: str, count: int) -> None:
        """List an index file (in the bank folder) over ``count`` keys of ``kind`` in the manifest."""
        entry = {"file": file, "count": count, "sha256": sha256(os.path.join(self.folder, file))}
        indexes = dict(self.manifest.get("indexes") or {}, **{kind: entry})
        manifest = dict(self.manifest, indexes=indexes)
        write_json(os.path.join(self.folder, MANIFEST), manifest)
        self.manifest = manifest

    def size_bytes(self) -> int:
        return sum(os.path.getsize(os.path.join(self.folder, f)) for f in os.listdir(self.folder) if f != LOCK_NAME)
