"""DemoBank: round trips, lazy reads, atomic appends, and clear errors for damaged or foreign banks."""
import json
import os

import pytest
import torch

from aim.bank import BankError, DemoBank

BACKBONE = {"family": "pocket", "model": "pocket", "revision": "abc", "dtype": "float32", "hidden_size": 8, "layer": -1}
FUSER = {"kind": "linear", "digest": "f00"}


def shard(start, n, hidden=8):
    g = torch.Generator().manual_seed(start)
    ids = [f"d{start + i}" for i in range(n)]
    fused = [torch.randn(3 + (start + i) % 4, hidden, generator=g) for i in range(n)]
    metas = [{"question": f"q{start + i}", "answers": ["a"]} for i in range(n)]
    keys = {"image": torch.randn(n, 5, generator=g)}
    return ids, fused, metas, keys


def test_round_trip_across_shards(tmp_path):
    bank = DemoBank.create(str(tmp_path), BACKBONE, FUSER, 8)
    a, b = shard(0, 3), shard(3, 2)
    bank.append(*a)
    bank.append(*b)
    again = DemoBank.open(str(tmp_path), backbone=BACKBONE, fuser=FUSER)
    assert len(again) == 5 and again.ids() == a[0] + b[0]
    for ids, fused, metas, _ in (a, b):
        for i, f, m in zip(ids, fused, metas):
            assert torch.equal(again.fused(i), f)
            assert again.meta(i)["question"] == m["question"]
    keys, ids = again.keys("image")
    assert torch.equal(keys, torch.cat([a[3]["image"], b[3]["image"]])) and ids == a[0] + b[0]
    manifest = json.load(open(tmp_path / "bank.json"))
    assert manifest["count"] == 5 and manifest["tokens"] == sum(f.shape[0] for f in a[1] + b[1])


def test_key_rows_read_the_rows_asked_for_across_shards(tmp_path):
    """``key_rows`` (what an IVF-PQ index re-ranks by) equals ``keys`` at any positions, in any order,
    across shards and after an append; a position outside the bank is a clear error."""
    import numpy as np

    bank = DemoBank.create(str(tmp_path), BACKBONE, FUSER, 8)
    bank.append(*shard(0, 3))
    bank.append(*shard(3, 4))
    positions = [6, 0, 3, 3, 2, 5]
    np.testing.assert_array_equal(bank.key_rows("image", positions), bank.keys("image")[0].numpy()[positions])
    bank.append(*shard(7, 2))  # the bank grew after its keys were mapped
    np.testing.assert_array_equal(bank.key_rows("image", [8, 1]), bank.keys("image")[0].numpy()[[8, 1]])
    assert bank.key_rows("image", []).shape == (0, 5)
    with pytest.raises(BankError, match=r"holds 9 demonstrations; positions must lie in 0..8, got 0..9"):
        bank.key_rows("image", [0, 9])
    with pytest.raises(BankError, match="has no 'text' keys"):
        bank.key_rows("text", [0])


def test_foreign_backbone_or_fuser_is_refused(tmp_path):
    DemoBank.create(str(tmp_path), BACKBONE, FUSER, 8).append(*shard(0, 2))
    other = dict(BACKBONE, family="llava", model="llava-hf/llava-1.5-7b-hf")
    with pytest.raises(BankError, match="built with backbone .*model=pocket.* uses .*llava-1.5-7b"):
        DemoBank.open(str(tmp_path), backbone=other)
    with pytest.raises(BankError, match="built with fuser .*digest=f00.*digest=bad"):
        DemoBank.open(str(tmp_path), fuser={"kind": "linear", "digest": "bad"})
    with pytest.raises(BankError, match="built with backbone"):
        DemoBank.create(str(tmp_path), other, FUSER, 8)
    # the same pocket weights loaded from another folder (same digest): the same backbone
    assert len(DemoBank.open(str(tmp_path), backbone=dict(BACKBONE, model="pocket:/elsewhere/next"))) == 2


def test_missing_manifest_and_truncated_shard(tmp_path):
    with pytest.raises(BankError, match="bank.json is missing"):
        DemoBank.open(str(tmp_path))
    DemoBank.create(str(tmp_path), BACKBONE, FUSER, 8).append(*shard(0, 3))
    path = tmp_path / "shard-00000.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BankError, match="shard-00000.safetensors is truncated"):
        DemoBank.open(str(tmp_path))


def test_interrupted_append_leaves_the_bank_as_it_was(tmp_path, monkeypatch):
    bank = DemoBank.create(str(tmp_path), BACKBONE, FUSER, 8)
    bank.append(*shard(0, 2))
    real = os.replace

    def killed(src, dst):  # killed in the middle of the second append: its tensors renamed, its jsonl not
        if str(dst).endswith("shard-00001.jsonl"):
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        bank.append(*shard(2, 2))
    monkeypatch.setattr(os, "replace", real)
    (tmp_path / "notes.txt").write_text("mine")  # files the bank never wrote are never deleted,
    (tmp_path / "shard-00009.safetensors").write_text("mine too")  # whatever their names
    reopened = DemoBank.open(str(tmp_path))
    assert len(reopened) == 2
    resumed = DemoBank.create(str(tmp_path), BACKBONE, FUSER, 8)
    assert sorted(os.listdir(tmp_path)) == ["bank.json", "notes.txt", "shard-00000.jsonl", "shard-00000.safetensors",
                                            "shard-00009.safetensors"]
    assert "pending" not in json.load(open(tmp_path / "bank.json"))
    resumed.append(*shard(2, 2))
    assert DemoBank.open(str(tmp_path)).ids() == ["d0", "d1", "d2", "d3"]


def test_duplicates_and_bad_shapes_are_refused(tmp_path):
    bank = DemoBank.create(str(tmp_path), BACKBONE, FUSER, 8)
    bank.append(*shard(0, 2))
    with pytest.raises(BankError, match="already present"):
        bank.append(*shard(1, 2))
    ids, fused, metas, keys = shard(5, 1, hidden=6)
    with pytest.raises(BankError, match="shape"):
        bank.append(ids, fused, metas, keys)
    with pytest.raises(BankError, match="not in bank"):
        bank.fused("nope")


@pytest.mark.parametrize("storage,tolerance,ratio", [("float16", 1e-3, 2), ("bfloat16", 8e-3, 2), ("int8", None, 4)])
def test_storage_formats_round_trip_within_their_precision(tmp_path, storage, tolerance, ratio):
    """Each format gives back every demonstration within its precision (int8: half a step of the
    token's own scale), records itself in the manifest, and shrinks the token data by its ratio."""
    plain = DemoBank.create(str(tmp_path / "f32"), BACKBONE, FUSER, 8)
    small = DemoBank.create(str(tmp_path / storage), BACKBONE, FUSER, 8, storage=storage)
    data = shard(0, 6)
    data[1][0][0, 0] = 300.0  # one large value: a per-token scale keeps the token's other values apart
    plain.append(*data)
    small.append(*data)
    again = DemoBank.open(str(tmp_path / storage), backbone=BACKBONE, fuser=FUSER)
    assert again.storage == storage and json.load(open(tmp_path / storage / "bank.json"))["storage"] == storage
    for i, f in zip(data[0], data[1]):
        got = again.fused(i)
        assert got.dtype == torch.float32 and got.shape == f.shape
        if storage == "int8":
            step = f.abs().amax(dim=1, keepdim=True) / 127
            assert bool(((got - f).abs() <= step / 2 + 1e-6).all())
        else:
            assert torch.allclose(got, f, rtol=tolerance, atol=tolerance)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "f32" / "shard-00000.safetensors"))["tokens"]
    b = load_file(str(tmp_path / storage / "shard-00000.safetensors"))["tokens"]
    assert a.numel() * a.element_size() == ratio * b.numel() * b.element_size()


def test_storage_is_fixed_for_the_bank_and_float16_overflow_is_refused(tmp_path):
    DemoBank.create(str(tmp_path / "b"), BACKBONE, FUSER, 8, storage="int8").append(*shard(0, 2))
    with pytest.raises(BankError, match="stores fused tokens as int8; this run asks for float32"):
        DemoBank.create(str(tmp_path / "b"), BACKBONE, FUSER, 8)
    assert DemoBank.create(str(tmp_path / "b"), BACKBONE, FUSER, 8, storage="int8").storage == "int8"  # resumes
    with pytest.raises(BankError, match="use one of float32, float16, bfloat16, int8"):
        DemoBank.create(str(tmp_path / "c"), BACKBONE, FUSER, 8, storage="fp8")
    big = DemoBank.create(str(tmp_path / "d"), BACKBONE, FUSER, 8, storage="float16")
    ids, fused, metas, keys = shard(0, 2)
    fused[1] = fused[1] * 1e5
    with pytest.raises(BankError, match="beyond float16's range: build the bank with --storage bfloat16"):
        big.append(ids, fused, metas, keys)
    assert len(DemoBank.open(str(tmp_path / "d"))) == 0  # nothing was written
