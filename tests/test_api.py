"""aim.FewShot on the pocket backbone: retrieval from a bank, every method, and the exactness of
fused prompts with an identity fuser (they answer exactly as text-only prompts)."""
import json
import os

import numpy as np
import pytest
import torch

import aim


@pytest.fixture(scope="module")
def fewshot(tmp_path_factory):
    torch.set_num_threads(1)
    fs = aim.FewShot.from_pretrained("pocket", fuser="identity")
    fs.compress(aim.load_records("easy-vqa:train", 24), str(tmp_path_factory.mktemp("bank")), batch_size=8,
                keys=("image", "text"), progress=False)
    return fs


def test_identity_fused_answers_equal_text_only(fewshot):
    queries = aim.load_records("easy-vqa:test", 3)
    images, questions = [q.image for q in queries], [q.question for q in queries]
    fused = fewshot.generate(images, questions, shots=4, select="image", method="fused")
    text = fewshot.generate(images, questions, shots=4, select="image", method="text")
    raw = fewshot.generate(images, questions, shots=4, select="image", method="raw")
    assert [a.text for a in fused] == [a.text for a in text]
    for f, t, r in zip(fused, text, raw):
        assert f.demo_ids == t.demo_ids == r.demo_ids and len(f.demo_ids) == 4
        assert f.prompt_tokens == t.prompt_tokens == r.prompt_tokens - 4 * fewshot.backbone.image_tokens


def test_selection(fewshot):
    query = aim.load_records("easy-vqa:train", 1)[0]  # sits in the pool
    for select in ("image", "text", "hybrid"):
        ids = fewshot.demo_ids([query.image], [query.question], 5, select, exclude=[query.id])[0]
        assert len(ids) == 5 and query.id not in ids
    # the most similar demonstration comes last: one showing the query's own image (several
    # easy-VQA questions share an image), when not excluded
    last = fewshot.demo_ids([query.image], [query.question], 3, "image")[0][-1]
    assert fewshot.bank.meta(last)["image"] == query.image
    a = fewshot.demo_ids([query.image], [query.question], 4, "random", seed=1)
    assert a == fewshot.demo_ids([query.image], [query.question], 4, "random", seed=1)
    assert a != fewshot.demo_ids([query.image], [query.question], 4, "random", seed=2)
    assert os.path.isfile(os.path.join(fewshot.bank.folder, "index.image.faiss"))
    with pytest.raises(aim.AimError, match="unknown selection"):
        fewshot.demo_ids([query.image], [query.question], 2, "clip")


def test_indexes_are_listed_in_the_bank_and_rebuilt_when_it_grows(fewshot, tmp_path):
    query = aim.load_records("easy-vqa:test", 1)[0]
    before = fewshot.demo_ids([query.image], [query.question], 3, "image")
    manifest = json.load(open(os.path.join(fewshot.bank.folder, "bank.json")))
    entry = manifest["indexes"]["image"]
    assert entry["file"] == "index.image.faiss" and entry["count"] == 24 and len(entry["sha256"]) == 64
    again = aim.FewShot(fewshot.backbone, fewshot.fuser)
    again.open_bank(fewshot.bank.folder)  # a new process: the index is read from the bank folder
    assert again.demo_ids([query.image], [query.question], 3, "image") == before
    grown = aim.FewShot(fewshot.backbone, fewshot.fuser)
    grown.compress(aim.load_records("easy-vqa:train", 30), fewshot.bank.folder, batch_size=8, keys=("image", "text"),
                   progress=False)
    grown.demo_ids([query.image], [query.question], 3, "image")
    manifest = json.load(open(os.path.join(fewshot.bank.folder, "bank.json")))
    assert manifest["indexes"]["image"]["count"] == 30 and len(grown.index("image")) == 30
    assert (grown.index("image").ids == np.arange(30)).all()  # one id space: bank positions


def test_zero_shot_needs_no_bank():
    fs = aim.FewShot(aim.load_backbone("pocket"), aim.Fuser(aim.FusionConfig(hidden_size=576, kind="identity")))
    q = aim.load_records("fashion-mnist:test", 1)[0]
    (ans,) = fs.generate([q.image], [q.question], shots=0, method="zero")
    assert ans.demo_ids == [] and ans.text
    with pytest.raises(aim.AimError, match="no demo bank"):
        fs.generate([q.image], [q.question], shots=2)



def test_the_bank_index_kind_can_be_chosen(tmp_path):
    """FewShot(index_kind=...) builds that FAISS index over the bank's keys, lists it in the manifest,
    and rebuilds an index of another kind when asked for one."""
    from aim.api import FewShot
    from aim.bank import DemoBank
    from aim.errors import AimError

    with pytest.raises(AimError, match="index kind 'annoy'"):
        FewShot(None, None, index_kind="annoy")
    bank = DemoBank.create(str(tmp_path), {"family": "toy"}, {"kind": "toy"}, 4)
    g = torch.Generator().manual_seed(0)
    ids = [f"d{i}" for i in range(600)]
    bank.append(ids, [torch.randn(2, 4, generator=g) for _ in ids], [{"question": "q", "answers": ["a"]}] * 600,
                {"image": torch.randn(600, 32, generator=g)})
    kinds = []
    for kind in ("ivfpq", "ivfpq", "flat"):
        fs = FewShot(None, None, index_kind=kind)
        fs.bank = DemoBank.open(str(tmp_path))
        index = fs.index("image")
        kinds.append((index.kind, fs.bank.manifest["indexes"]["image"]["count"]))
        assert len(fs.demo_ids([None], ["q"], 5, "random", seed=1)[0]) == 5
    assert kinds == [("ivfpq", 600), ("ivfpq", 600), ("flat", 600)]


def test_an_ivfpq_bank_index_returns_exact_search(tmp_path):
    """FewShot(index_kind="ivfpq") re-ranks IVF-PQ's candidates by the bank's exact keys (image and
    hybrid), so on clustered keys, where IVF-PQ alone misses many of the exact top 8, it selects the
    demonstrations an exact flat index selects."""
    import numpy as np

    from aim.api import FewShot
    from aim.bank import DemoBank
    from aim.retrieval import hybrid_keys, recall_at_k

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 576), dtype=np.float32)
    image = centres[rng.integers(0, 20, 3000)] + 0.6 * rng.standard_normal((3000, 576), dtype=np.float32)
    text = rng.standard_normal((3000, 384), dtype=np.float32)
    bank = DemoBank.create(str(tmp_path), {"family": "toy"}, {"kind": "toy"}, 4)
    for lo in range(0, 3000, 1000):  # three shards
        ids = [f"d{i}" for i in range(lo, lo + 1000)]
        bank.append(ids, [torch.zeros(1, 4)] * 1000, [{"question": "q", "answers": ["a"]}] * 1000,
                    {"image": torch.from_numpy(image[lo:lo + 1000]), "text": torch.from_numpy(text[lo:lo + 1000])})
    queries = {"image": image[:40] + 0.3 * rng.standard_normal((40, 576), dtype=np.float32)}
    queries["hybrid"] = hybrid_keys(queries["image"], text[:40])
    for kind in ("image", "hybrid"):
        exact = FewShot(None, None, DemoBank.open(str(tmp_path)), index_kind="flat").index(kind)
        pq = FewShot(None, None, DemoBank.open(str(tmp_path)), index_kind="ivfpq").index(kind)
        _, want = exact.search(queries[kind], 8)
        _, got = pq.search(queries[kind], 8)
        assert pq.kind == "ivfpq" and recall_at_k(got, want) == 1.0
        pq.exact_keys = None
        assert recall_at_k(pq.search(queries[kind], 8)[1], want) < 0.9
