"""Tasks beyond VQA: the captioning and classification readers, CIDEr through pycocoevalcap, rank
classification (``--scoring likelihood``), ROC-AUC, the per-answer-type breakdown and their errors."""
from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import aim
from aim.data.captions import CAPTION_PROMPT
from aim.data.detect import load_path
from aim.data.record import Record
from aim.errors import AimError, DatasetError, MetricError
from aim.eval.config import IclEvalConfig
from aim.eval.runner import icl_eval
from aim.eval.tasks import choose_metric, task_of
from aim.fusion import load_fuser

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime (apt-get install default-jre-headless)")


@pytest.fixture(scope="module")
def llava(tiny_hf_folders, single_thread_torch):
    return aim.load_backbone(tiny_hf_folders("llava"))


def save_images(folder, names, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(os.path.join(folder, name))


def samples_of(doc):
    with open(doc["files"]["samples"]) as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------------------- readers

def test_coco_captions_json(tmp_path):
    save_images(tmp_path / "val2014", ["COCO_val2014_000000000001.jpg", "COCO_val2014_000000000002.jpg"])
    data = {"images": [{"id": 1, "file_name": "COCO_val2014_000000000001.jpg"},
                       {"id": 2, "file_name": "COCO_val2014_000000000002.jpg"},
                       {"id": 3, "file_name": "COCO_val2014_000000000003.jpg"}],  # no caption: left out
            "annotations": [{"image_id": 1, "id": 10, "caption": "A dog on a sofa."},
                            {"image_id": 2, "id": 11, "caption": "Two cats."},
                            {"image_id": 1, "id": 12, "caption": "A brown dog sleeping. "}]}
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps(data))
    records = load_path(str(path))
    assert [r.id for r in records] == [1, 2]
    assert records[0].answers == ["A dog on a sofa.", "A brown dog sleeping."]
    assert records[0].question == CAPTION_PROMPT and records[0].extra["task"] == "caption"
    assert records[0].image == str(tmp_path / "val2014" / "COCO_val2014_000000000001.jpg")
    assert task_of(records) == "caption" and choose_metric(records) == "cider"


def test_a_captioning_file_without_captions_is_a_clear_error(tmp_path):
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                                "annotations": [{"image_id": 9, "id": 1, "caption": "x"}]}))
    with pytest.raises(DatasetError, match="no image of .images. has a caption"):
        load_path(str(path))
    karpathy = tmp_path / "dataset_flickr30k.json"
    save_images(tmp_path / "images", ["1.jpg"])
    karpathy.write_text(json.dumps({"dataset": "flickr30k", "images": [
        {"filename": "1.jpg", "imgid": 0, "split": "test", "sentences": [{"raw": " "}]}]}))
    with pytest.raises(DatasetError, match="no captions"):
        load_path(str(karpathy))


def test_karpathy_split_json(tmp_path):
    save_images(tmp_path / "val2014", ["a.jpg", "b.jpg"])
    save_images(tmp_path / "train2014", ["c.jpg"])
    rows = [{"filepath": "val2014", "filename": "a.jpg", "cocoid": 5, "split": "test",
             "sentences": [{"raw": "A man riding a horse."}, {"raw": "Someone on a horse."}]},
            {"filepath": "val2014", "filename": "b.jpg", "cocoid": 6, "split": "val", "sentences": [{"raw": "A bus."}]},
            {"filepath": "train2014", "filename": "c.jpg", "cocoid": 7, "split": "test", "sentences": [{"raw": "Snow."}]}]
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": rows}))
    test = load_path(f"{path}:test")
    assert [r.id for r in test] == [5, 7]
    assert test[0].answers == ["A man riding a horse.", "Someone on a horse."]
    assert test[1].image == str(tmp_path / "train2014" / "c.jpg")
    assert len(load_path(str(path))) == 3
    with pytest.raises(DatasetError, match="no split 'restval'"):
        load_path(f"{path}:restval")


def png_bytes(seed):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_lmms_eval_caption_and_hateful_memes_parquet_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    flickr = pa.table({"image": [{"bytes": png_bytes(0), "path": None}, {"bytes": png_bytes(1), "path": None}],
                       "caption": [["A girl.", "A child."], ["A red car."]], "img_id": ["11", "12"],
                       "filename": ["11.jpg", "12.jpg"]})
    pq.write_table(flickr, tmp_path / "flickr.parquet")
    records = load_path(str(tmp_path / "flickr.parquet"))
    assert [r.id for r in records] == ["11", "12"] and records[1].answers == ["A red car."]
    assert {r.extra["task"] for r in records} == {"caption"} and records[0].question == CAPTION_PROMPT
    memes = pa.table({"id": [1, 2], "img": [{"bytes": png_bytes(2), "path": None}, {"bytes": png_bytes(3), "path": None}],
                      "label": [1, 0], "text": ["a mean caption", "a kind one"]})
    pq.write_table(memes, tmp_path / "memes.parquet")
    rows = load_path(str(tmp_path / "memes.parquet"))
    assert [r.answers for r in rows] == [["yes"], ["no"]]
    assert rows[0].extra["classes"] == ["no", "yes"] and rows[0].extra["positive"] == "yes"
    assert choose_metric(rows) == "roc_auc"


def test_hateful_memes_jsonl(tmp_path):
    save_images(tmp_path / "img", ["42953.png", "23058.png"])
    lines = [{"id": 42953, "img": "img/42953.png", "label": 0, "text": "its their character not their color"},
             {"id": 23058, "img": "img/23058.png", "label": 1, "text": "don't be afraid"}]
    (tmp_path / "dev_seen.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    records = load_path(str(tmp_path / "dev_seen.jsonl"))
    assert records[0].question == "is an image with: 'its their character not their color' written on it. Is it hateful?"
    assert [r.answers for r in records] == [["no"], ["yes"]] and task_of(records) == "classification"
    (tmp_path / "bad.jsonl").write_text(json.dumps(dict(lines[0], label=3)))
    with pytest.raises(DatasetError, match="labels are 0 .not hateful. or 1"):
        load_path(str(tmp_path / "bad.jsonl"))


# ---------------------------------------------------------------------------- captioning metric

@needs_java
def test_cider_of_icl_eval_equals_pycocoevalcaps_own(llava, tmp_path):
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    save_images(tmp_path / "im", [f"{i}.png" for i in range(6)])
    captions = [["A dog.", "A brown dog on grass."], ["Two cats."], ["A red bus on a street.", "A bus."],
                ["Snow on a hill."], ["A man with a hat."], ["Cars in the rain.", "A wet road."]]
    records = [Record(i, str(tmp_path / "im" / f"{i}.png"), CAPTION_PROMPT, c, {"task": "caption"})
               for i, c in enumerate(captions)]
    doc = icl_eval(llava, records, IclEvalConfig(dataset="caps", pool="caps", methods=("zero", "text"),
                                                 shots=(0, 2), seeds=(0,), batch_size=3, max_new_tokens=6),
                   str(tmp_path / "runs"), fuser=load_fuser("identity", llava), pool=records, progress=False)
    assert doc["metric"] == "cider" and doc["task"] == "caption"
    assert doc["scorers"]["cider"]["library"] == "pycocoevalcap" and doc["scorers"]["cider"]["version"] == "1.2"
    samples = samples_of(doc)
    for method, k in (("zero", 0), ("text", 2)):
        mine = [s for s in samples if s["method"] == method and s["shots"] == k]
        gts = {str(s["id"]): [{"caption": c} for c in s["answers"]] for s in mine}
        res = {str(s["id"]): [{"caption": s["prediction"]}] for s in mine}
        tok = PTBTokenizer()
        expected, _ = Cider().compute_score(tok.tokenize(gts), tok.tokenize(res))
        cell = doc["results"]["caps"][method][str(k)]
        assert cell["cider"]["mean"] == pytest.approx(expected, abs=1e-9)
        assert cell["accuracy"]["metric"] == "cider" and {"bleu4", "rouge_l"} <= set(cell)


def test_java_missing_is_a_clear_error(monkeypatch):
    from aim.eval import captioning

    monkeypatch.setattr(captioning.shutil, "which", lambda name: None)
    with pytest.raises(MetricError, match="apt-get install default-jre-headless"):
        captioning.caption_scores(["a dog"], [["a dog"]])


# ---------------------------------------------------------------------------- classification

def classification_records(folder, binary=True):
    names = [f"{i}.png" for i in range(6)]
    save_images(folder, names, seed=3)
    classes = ["no", "yes"] if binary else ["cat", "dog", "bird"]
    out = []
    for i, name in enumerate(names):
        extra = {"classes": classes}
        if binary:
            extra["positive"] = "yes"
        out.append(Record(f"c{i}", os.path.join(folder, name), "Is it a cat?", [classes[i % len(classes)]], extra))
    return out


def test_rank_classification_through_icl_eval(llava, tmp_path):
    from sklearn.metrics import roc_auc_score

    records = classification_records(str(tmp_path / "im"))
    doc = icl_eval(llava, records, IclEvalConfig(dataset="memes", pool="memes", methods=("zero", "raw", "fused"),
                                                 shots=(0, 2), seeds=(0, 1), batch_size=4, scoring="likelihood"),
                   str(tmp_path / "runs"), fuser=load_fuser("identity", llava), pool=records, progress=False)
    assert doc["metric"] == "roc_auc" and doc["metrics"] == ["roc_auc", "exact_match"]
    assert doc["scorers"]["roc_auc"]["library"] == "scikit-learn"
    samples = samples_of(doc)
    for s in samples:
        assert s["prediction"] in ("no", "yes") and set(s["class_logprobs"]) == {"no", "yes"}
        assert s["prediction"] == max(s["class_logprobs"], key=s["class_logprobs"].get)
        assert s["new_tokens"] == 0
        lp = s["class_logprobs"]
        assert s["positive_score"] == pytest.approx(1 / (1 + np.exp(lp["no"] - lp["yes"])), abs=1e-9)
    # the raw 2-shot figure per seed is scikit-learn's ROC-AUC over that seed's samples
    cell = doc["results"]["memes"]["raw"]["2"]
    for seed in (0, 1):
        mine = [s for s in samples if s["method"] == "raw" and s["shots"] == 2 and s["seed"] == seed]
        expected = roc_auc_score([s["label"] for s in mine], [s["positive_score"] for s in mine])
        assert cell["roc_auc"]["per_seed"][str(seed)] == pytest.approx(expected)
    # the likelihoods are those of Backbone.rank_classes on the same prompt
    zero = {s["id"]: s for s in samples if s["method"] == "zero"}
    body = llava.query_body(Image.open(records[0].image).convert("RGB"), records[0].question)
    ranked = llava.rank_classes(llava.encode([body]), [["no", "yes"]])[0]
    assert [r.logprob for r in ranked] == pytest.approx([zero["c0"]["class_logprobs"][c] for c in ("no", "yes")],
                                                        abs=1e-4)


def test_generated_answers_score_classification_too(llava, tmp_path):
    records = classification_records(str(tmp_path / "im"), binary=False)
    doc = icl_eval(llava, records, IclEvalConfig(dataset="animals", methods=("zero",), shots=(0,), seeds=(0,),
                                                 max_new_tokens=3),
                   str(tmp_path / "runs"), progress=False)
    assert doc["metric"] == "exact_match" and doc["task"] == "classification"
    assert all("class_logprobs" not in s for s in samples_of(doc))


def test_likelihood_without_a_class_list_is_a_clear_error(llava, tmp_path):
    records = [Record("a", "x.png", "What is it?", ["cat"])]
    with pytest.raises(AimError, match="record a has none"):
        icl_eval(llava, records, IclEvalConfig(dataset="d", methods=("zero",), shots=(0,), scoring="likelihood"),
                 str(tmp_path), progress=False)
    caps = [Record("a", "x.png", CAPTION_PROMPT, ["A cat."], {"task": "caption"})]
    with pytest.raises(AimError, match="captioning is scored on generated captions"):
        icl_eval(llava, caps, IclEvalConfig(dataset="d", methods=("zero",), shots=(0,), scoring="likelihood"),
                 str(tmp_path), progress=False)
    with pytest.raises(AimError, match="ROC-AUC needs binary records"):
        choose_metric(records, "roc_auc")


def test_answer_types_are_broken_down(llava, tmp_path):
    save_images(tmp_path / "im", [f"{i}.png" for i in range(4)])
    types = ["yes/no", "number", "other", "yes/no"]
    records = [Record(f"v{i}", str(tmp_path / "im" / f"{i}.png"), "How many?", ["2"] * 3, {"answer_type": t})
               for i, t in enumerate(types)]
    doc = icl_eval(llava, records, IclEvalConfig(dataset="vqa", methods=("zero",), shots=(0,), seeds=(0,),
                                                 max_new_tokens=2), str(tmp_path / "runs"), progress=False)
    cell = doc["results"]["vqa"]["zero"]["0"]
    assert set(cell["by_answer_type"]) == {"yes/no", "number", "other"}
    assert cell["by_answer_type"]["yes/no"]["n"] == 2
    samples = {s["id"]: s for s in samples_of(doc)}
    assert cell["by_answer_type"]["number"]["mean"] == samples["v1"]["vqa_accuracy"]
    assert doc["scorers"]["vqa_accuracy"]["follows"].startswith("open_flamingo")
