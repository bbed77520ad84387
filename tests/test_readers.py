"""Dataset readers (aim/data): each format written small, in its real layout, into tmp_path, read
back through ``load_records``; the exact records, and the errors for a missing field, a missing or
unreadable image and an unknown format."""
from __future__ import annotations

import io
import json
import os
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from aim.data.fields import DatasetError, demo_first
from aim.data.spec import load_records
from aim.errors import AimError, ImageError
from aim.images import load_image

COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def picture(color: str = "red", size: int = 8) -> Image.Image:
    return Image.new("RGB", (size, size), COLORS[color])


def save_picture(path, color: str = "red") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    picture(color).save(path)
    return str(path)


def png_bytes(color: str = "red") -> bytes:
    buf = io.BytesIO()
    picture(color).save(buf, format="PNG")
    return buf.getvalue()


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def assert_color(image, color: str) -> None:
    pixel = load_image(image).getpixel((4, 4))
    assert all(abs(a - b) < 40 for a, b in zip(pixel, COLORS[color])), pixel


# --- JSONL ------------------------------------------------------------------------------------------

@pytest.fixture
def jsonl_file(tmp_path):
    save_picture(tmp_path / "images" / "a.png", "red")
    absolute = save_picture(tmp_path / "elsewhere" / "b.jpg", "blue")
    return write_jsonl(tmp_path / "data.jsonl", [
        {"question_id": 7, "image": "images/a.png", "question": "What colour?", "answers": ["red", "crimson"],
         "source": "hand"},
        {"id": "q-2", "image": absolute, "question": "And this one?", "answer": "blue"},
    ])


def test_jsonl_reads_exact_records(jsonl_file, tmp_path):
    records = load_records(jsonl_file)
    assert [(r.id, r.question, r.answers) for r in records] == [
        (7, "What colour?", ["red", "crimson"]), ("q-2", "And this one?", ["blue"])]
    assert records[0].image == str(tmp_path / "images" / "a.png")
    assert records[0].extra == {"source": "hand"} and records[1].extra == {}
    assert_color(records[0].image, "red")
    assert_color(records[1].image, "blue")
    assert [r.id for r in load_records(f"jsonl:{jsonl_file}", limit=1)] == [7]


def test_jsonl_missing_field_names_file_record_and_fix(tmp_path):
    save_picture(tmp_path / "a.png")
    path = write_jsonl(tmp_path / "bad.jsonl", [
        {"question_id": 1, "image": "a.png", "question": "q?", "answers": ["x"]},
        {"question_id": 2, "image": "a.png", "answers": ["y"]},
    ])
    with pytest.raises(DatasetError) as err:
        load_records(path)
    message = str(err.value)
    assert f"{path}, record 1 (id 2)" in message and "'question'" in message and "add the field" in message


def test_jsonl_missing_image_names_file_record_path_and_fix(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question_id": "x1", "image": "gone.jpg", "question": "q?",
                                               "answers": "a"}])
    with pytest.raises(ImageError) as err:
        load_records(path)
    message = str(err.value)
    assert f"{path}, record 0 (id 'x1')" in message and str(tmp_path / "gone.jpg") in message
    assert "fix the path" in message


def test_unreadable_image_fails_at_use_naming_the_path(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    path = write_jsonl(tmp_path / "d.jsonl", [{"question_id": 1, "image": "broken.jpg", "question": "q?",
                                               "answers": ["a"]}])
    record = load_records(path)[0]
    with pytest.raises(ImageError) as err:
        load_image(record.image)
    assert str(tmp_path / "broken.jpg") in str(err.value) and "corrupt" in str(err.value)


def test_repeated_ids_are_refused(tmp_path):
    save_picture(tmp_path / "a.png")
    row = {"question_id": 3, "image": "a.png", "question": "q?", "answers": ["a"]}
    path = write_jsonl(tmp_path / "d.jsonl", [row, dict(row, question_id="3")])
    with pytest.raises(DatasetError, match=r"records 0 and 1 share the id '3'.*remove the duplicate"):
        load_records(path)


# --- official VQA pair ---------------------------------------------------------------------------------

ANNOTATORS = ["two", "2", "two", "2", "2", "two", "two", "3", "two", "2"]


def write_vqa_pair(folder, subtype: str = "val2014", qids=(1001, 1002, 1003)) -> None:
    """Questions + annotations files named as VQAv2's, images under FOLDER/<subtype> in three namings."""
    os.makedirs(folder, exist_ok=True)
    images = os.path.join(folder, subtype)
    save_picture(os.path.join(images, f"COCO_{subtype}_000000000042.jpg"), "red")
    save_picture(os.path.join(images, "000000000007.jpg"), "green")
    save_picture(os.path.join(images, "9.jpg"), "blue")
    questions = [{"image_id": 42, "question": "How many cats?", "question_id": qids[0]},
                 {"image_id": 7, "question": "What is green?", "question_id": qids[1]},
                 {"image_id": 9, "question": "Is it blue?", "question_id": qids[2]}]
    answers = [ANNOTATORS, ["grass"] * 9 + ["lawn"], ["yes"] * 10]
    annotations = [{"question_id": q["question_id"], "image_id": q["image_id"], "question_type": "how many",
                    "answer_type": "number", "multiple_choice_answer": mc,
                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                                for k, a in enumerate(ans)]}
                   for q, ans, mc in zip(questions, answers, ["2", "grass", "yes"])]
    with open(os.path.join(folder, f"v2_OpenEnded_mscoco_{subtype}_questions.json"), "w") as f:
        json.dump({"info": {}, "data_subtype": subtype, "questions": questions}, f)
    with open(os.path.join(folder, f"v2_mscoco_{subtype}_annotations.json"), "w") as f:
        json.dump({"info": {}, "data_subtype": subtype, "annotations": annotations}, f)


def test_vqa_pair_folder(tmp_path):
    write_vqa_pair(tmp_path / "vqav2")
    records = load_records(str(tmp_path / "vqav2"))
    assert [(r.id, r.question) for r in records] == [(1001, "How many cats?"), (1002, "What is green?"),
                                                      (1003, "Is it blue?")]
    first = records[0]
    # multiple_choice_answer first; all ten annotator answers kept (reordered, none dropped or added)
    assert first.answer == "2" and Counter(first.answers) == Counter(ANNOTATORS) and len(first.answers) == 10
    assert first.answers == ["2", "two", "two", "2", "2", "two", "two", "3", "two", "2"]
    assert records[1].answers == ["grass"] * 9 + ["lawn"]
    assert first.extra["image_id"] == 42 and first.extra["multiple_choice_answer"] == "2"
    assert [os.path.basename(r.image) for r in records] == ["COCO_val2014_000000000042.jpg", "000000000007.jpg",
                                                            "9.jpg"]
    for r, color in zip(records, ["red", "green", "blue"]):
        assert_color(r.image, color)


def test_vqa_pair_other_ways_to_point_at_it(tmp_path):
    folder = tmp_path / "okvqa"
    write_vqa_pair(folder)
    questions = str(folder / "v2_OpenEnded_mscoco_val2014_questions.json")
    annotations = str(folder / "v2_mscoco_val2014_annotations.json")
    expected = [r.id for r in load_records(str(folder))]
    assert [r.id for r in load_records(questions)] == expected
    assert [r.id for r in load_records(annotations)] == expected
    explicit = f"vqa:questions={questions},annotations={annotations},images={folder / 'val2014'}"
    assert [r.id for r in load_records(explicit, limit=2)] == expected[:2]
    # two pairs in one folder: FOLDER:SPLIT picks one, and without it the error says so
    write_vqa_pair(folder, "train2014", qids=(1, 2, 3))
    assert [r.id for r in load_records(f"{folder}:train2014")] == [1, 2, 3]
    with pytest.raises(DatasetError, match=r"expected one \*questions\*\.json, found .*:SPLIT"):
        load_records(str(folder))


def test_vqa_pair_errors_name_file_record_and_fix(tmp_path):
    folder = tmp_path / "vqa"
    write_vqa_pair(folder)
    os.remove(folder / "val2014" / "9.jpg")
    with pytest.raises(ImageError) as err:
        load_records(str(folder))
    message = str(err.value)
    assert "questions.json, record 2 (id 1003)" in message and "9.jpg" in message and "images=FOLDER" in message
    ann_path = folder / "v2_mscoco_val2014_annotations.json"
    anns = json.loads(ann_path.read_text())
    del anns["annotations"][1]["answers"]
    ann_path.write_text(json.dumps(anns))
    with pytest.raises(DatasetError) as err:
        load_records(str(folder), limit=2)
    message = str(err.value)
    assert f"{ann_path}, record 1 (id 1002)" in message and "'answers'" in message and "add 'answers'" in message


# --- VizWiz and TextVQA ------------------------------------------------------------------------------

def test_vizwiz_json(tmp_path):
    save_picture(tmp_path / "val" / "VizWiz_val_00000000.jpg", "red")
    save_picture(tmp_path / "val" / "VizWiz_val_00000001.jpg", "green")
    rows = [{"image": "VizWiz_val_00000000.jpg", "question": "What is this?", "answerable": 1,
             "answer_type": "other",
             "answers": [{"answer": a, "answer_confidence": "yes"} for a in ["soup", "tomato soup", "soup"]]},
            {"image": "VizWiz_val_00000001.jpg", "question": "What colour?", "answerable": 0,
             "answer_type": "unanswerable",
             "answers": [{"answer": a, "answer_confidence": "maybe"} for a in ["green", "unanswerable",
                                                                               "unanswerable"]]}]
    os.makedirs(tmp_path / "Annotations")
    path = tmp_path / "Annotations" / "val.json"
    path.write_text(json.dumps(rows))
    records = load_records(str(path))
    assert [(r.id, r.question, r.answers) for r in records] == [
        ("VizWiz_val_00000000", "What is this?", ["soup", "tomato soup", "soup"]),
        ("VizWiz_val_00000001", "What colour?", ["unanswerable", "green", "unanswerable"])]
    assert records[1].extra["answerable"] == 0
    assert_color(records[1].image, "green")
    assert [r.id for r in load_records(f"vizwiz:{path},images={tmp_path / 'val'}", limit=1)] == ["VizWiz_val_00000000"]


def test_textvqa_json(tmp_path):
    save_picture(tmp_path / "train_images" / "0054c91397f2fe05.jpg", "blue")
    answers = ["nokia"] * 7 + ["nokia phone", "nokia", "unanswerable"]
    data = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1",
            "data": [{"question_id": 34602, "image_id": "0054c91397f2fe05", "question": "what brand?",
                      "answers": answers, "image_classes": ["phone"], "set_name": "val"}]}
    path = tmp_path / "TextVQA_0.5.1_val.json"
    path.write_text(json.dumps(data))
    (record,) = load_records(f"textvqa:{path}")
    assert (record.id, record.question, record.answers) == (34602, "what brand?", answers)
    assert record.extra["image_classes"] == ["phone"]
    assert_color(record.image, "blue")


# --- Hugging Face datasets folders and parquet ----------------------------------------------------------

def vqav2_rows():
    """lmms-eval VQAv2 fields: dict answers, multiple_choice_answer, int question_id, PIL image."""
    def ans(texts):
        return [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(texts)]

    return {"question_id": [11, 12], "question": ["How many?", "What colour?"],
            "answers": [ans(ANNOTATORS), ans(["red"] * 10)], "multiple_choice_answer": ["2", "red"],
            "image_id": [42, 43], "image": [picture("red"), picture("green")]}


def okvqa_rows():
    """lmms-eval OK-VQA fields: string answers."""
    return {"question_id": [5, 6], "question": ["Which sport?", "What season?"],
            "answers": [["tennis", "tennis", "badminton"], ["winter", "fall", "fall"]],
            "image": [picture("blue"), picture("green")]}


def test_lmms_eval_vqav2_dict_answers_and_okvqa_string_answers_both_load(tmp_path):
    import datasets

    datasets.Dataset.from_dict(vqav2_rows()).save_to_disk(str(tmp_path / "vqav2"))
    datasets.Dataset.from_dict(okvqa_rows()).to_parquet(str(tmp_path / "okvqa.parquet"))
    vqav2 = load_records(str(tmp_path / "vqav2"))
    okvqa = load_records(str(tmp_path / "okvqa.parquet"))
    assert [(r.id, r.question, r.answers) for r in vqav2] == [
        (11, "How many?", ["2", "two", "two", "2", "2", "two", "two", "3", "two", "2"]),
        (12, "What colour?", ["red"] * 10)]
    assert [(r.id, r.question, r.answers) for r in okvqa] == [
        (5, "Which sport?", ["tennis", "tennis", "badminton"]), (6, "What season?", ["fall", "winter", "fall"])]
    assert vqav2[0].extra == {"multiple_choice_answer": "2", "image_id": 42}
    for records, colors in ((vqav2, ["red", "green"]), (okvqa, ["blue", "green"])):
        for r, color in zip(records, colors):
            assert isinstance(r.image, Image.Image)
            assert_color(r.image, color)


def test_hf_dataset_dict_splits(tmp_path):
    import datasets

    folder = str(tmp_path / "vizwiz")
    vizwiz = {"question_id": ["VizWiz_val_00000000.jpg"], "question": ["What is it?"], "answers": [["a can", "can"]],
              "category": ["other"], "image": [picture("red")]}
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict(vizwiz),
                          "test": datasets.Dataset.from_dict(dict(vizwiz, question_id=["VizWiz_test_00000000.jpg"]))
                          }).save_to_disk(folder)
    assert [r.id for r in load_records(folder)] == ["VizWiz_test_00000000.jpg"]  # test before validation
    (record,) = load_records(f"hf:{folder}:validation")
    assert (record.id, record.answers, record.extra) == ("VizWiz_val_00000000.jpg", ["a can", "can"],
                                                         {"category": "other"})
    with pytest.raises(DatasetError, match=r"no split 'train' \(its splits: .*use .*:SPLIT\)"):
        load_records(f"{folder}:train")


def test_parquet_folder_of_splits(tmp_path):
    import datasets

    data = tmp_path / "textvqa" / "data"
    os.makedirs(data)
    rows = {"question_id": [1, 2, 3], "question": ["a?", "b?", "c?"], "answers": [["x"], ["y"], ["z"]],
            "image": [{"bytes": png_bytes("red"), "path": None}] * 3}
    ds = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    ds.select([0, 1]).to_parquet(str(data / "validation-00000-of-00002.parquet"))
    ds.select([2]).to_parquet(str(data / "validation-00001-of-00002.parquet"))
    ds.to_parquet(str(data / "train-00000-of-00001.parquet"))
    folder = str(tmp_path / "textvqa")
    assert [r.id for r in load_records(f"{folder}:validation")] == [1, 2, 3]
    assert [r.id for r in load_records(f"parquet:{folder}:validation", limit=2)] == [1, 2]
    assert [r.id for r in load_records(folder)] == [1, 2, 3]  # validation: preferred over train
    assert_color(load_records(f"{folder}:train", limit=1)[0].image, "red")


def test_hf_missing_field_and_bad_images(tmp_path):
    import datasets

    no_question = {"question_id": [1, 2], "answers": [["a"], ["b"]], "image": [picture(), picture()]}
    datasets.Dataset.from_dict(no_question).save_to_disk(str(tmp_path / "nq"))
    with pytest.raises(DatasetError, match=r"nq, record 0 \(id 1\): no 'question' field \(.*add the field"):
        load_records(str(tmp_path / "nq"))
    pattern = (np.arange(32 * 32 * 3).reshape(32, 32, 3) * 37 % 251).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pattern).save(buf, format="PNG")
    truncated = buf.getvalue()[: len(buf.getvalue()) // 2]
    rows = {"question_id": ["a", "b"], "question": ["q?", "q?"], "answers": [["x"], ["y"]],
            "image": [{"bytes": png_bytes(), "path": None}, {"bytes": truncated, "path": None}]}
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "t.parquet"))
    records = load_records(str(tmp_path / "t.parquet"))  # header is fine, pixels are cut short
    load_image(records[0].image)
    with pytest.raises(ImageError) as err:
        load_image(records[1].image)
    assert "t.parquet, record 1 (id 'b')" in str(err.value) and "re-save the dataset" in str(err.value)
    rows["image"][1] = {"bytes": b"not an image at all", "path": None}
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "g.parquet"))
    with pytest.raises(ImageError, match=r"g\.parquet, record 1 \(id 'b'\).*not a readable image.*re-save"):
        load_records(str(tmp_path / "g.parquet"))


# --- unknown formats and specs ---------------------------------------------------------------------------

def test_unknown_formats_name_the_file_and_the_fix(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("id,question\n1,what?\n")
    with pytest.raises(DatasetError) as err:
        load_records(str(csv))
    assert str(csv) in str(err.value) and "unknown dataset format" in str(err.value) and "FORMAT:PATH" in str(err.value)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rows": []}))
    with pytest.raises(DatasetError, match=r"other\.json: unknown JSON dataset format \(expected .*docs/datasets"):
        load_records(str(other))
    with pytest.raises(DatasetError, match=r"not a vizwiz file .*drop the 'vizwiz:' prefix"):
        load_records(f"vizwiz:{other}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"empty: unknown dataset format"):
        load_records(str(empty))
    with pytest.raises(AimError, match=r"unknown dataset 'coco:val'.*no file or folder.*easy-vqa:test"):
        load_records("coco:val")


def test_demo_first_reorders_without_dropping():
    assert demo_first(["b", "a", "a"]) == ["a", "b", "a"]
    assert demo_first(["b", "A ", "a"], preferred="a") == ["a", "b", "A "]
    assert demo_first(["x", "y"], preferred="z") == ["x", "y"]  # not among them: the most common, earliest
