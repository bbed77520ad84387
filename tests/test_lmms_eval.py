"""``--model aim`` through lmms-eval's own CLI on local tasks (easy-VQA images in JSONL files read by
lmms-eval's loaders): its result and sample files, the same predictions as ``aim icl-eval`` for
the same questions and demonstrations, and likelihoods equal to ``Backbone.loglikelihood``."""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

import aim
import aim.errors
from aim.eval.config import IclEvalConfig
from aim.eval.runner import icl_eval
from aim.fusion import load_fuser
from aim.images import load_image
from aim.prompting import prompt_body

TRAIN, TEST, SHOTS = 40, 12, 4
#: (method, shots) of each lmms-eval run
RUNS = (("zero", 0), ("raw", SHOTS), ("text", SHOTS), ("fused", SHOTS), ("fused", 0))
COLORS = ["red", "green", "blue", "black", "gray", "yellow", "teal", "brown"]

UTILS = '''import os

from PIL import Image


def doc_to_visual(doc):
    return [Image.open(os.path.join(os.path.dirname(__file__), doc["image"])).convert("RGB")]


def doc_to_text(doc):
    return doc["question"]
'''

VQA_YAML = '''task: aimtest_easy_vqa
dataset_path: json
dataset_kwargs:
  data_files:
    train: train.jsonl
    test: test.jsonl
test_split: test
training_split: train
fewshot_config:
  sampler: first_n
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  until: ["\\n"]
  max_new_tokens: 10
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
metadata:
  version: 0.0
'''

MC_YAML = '''task: aimtest_easy_vqa_mc
dataset_path: json
dataset_kwargs:
  data_files:
    train: mc_train.jsonl
    test: mc_test.jsonl
test_split: test
training_split: train
fewshot_config:
  sampler: first_n
output_type: multiple_choice
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_choice: choices
doc_to_target: label
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0.0
'''


@pytest.fixture(scope="module", autouse=True)
def strict_images():
    """lmms-eval sets PIL's ImageFile.LOAD_TRUNCATED_IMAGES on import (lmms_eval.api.task); the other
    tests of this process expect truncated images to fail as aim's readers report them."""
    from PIL import ImageFile

    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    yield
    ImageFile.LOAD_TRUNCATED_IMAGES = saved


def choices_of(record):
    """The answer's kind: yes/no, a shape or a colour."""
    for kind in (["yes", "no"], ["circle", "rectangle", "triangle"], COLORS):
        if record.answers[0] in kind:
            return kind
    raise AssertionError(record)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """A folder of two lmms-eval tasks (generation and multiple choice) over easy-VQA files."""
    folder = tmp_path_factory.mktemp("lmms_tasks")
    (folder / "images").mkdir()
    for split, n in (("train", TRAIN), ("test", TEST)):
        records = aim.load_records(f"easy-vqa:{split}", n)
        for r in records:  # the files' image paths are relative to their folder, as aim's JSONL reader wants
            name = f"images/{split}-{os.path.basename(r.image)}"
            shutil.copyfile(r.image, folder / name)
            r.image = name
        with open(folder / f"{split}.jsonl", "w") as f:
            for r in records:
                f.write(json.dumps({"id": str(r.id), "image": r.image, "question": r.question, "answer": r.answers[0],
                                    "answers": r.answers}) + "\n")
        with open(folder / f"mc_{split}.jsonl", "w") as f:
            for r in records:
                choices = choices_of(r)
                f.write(json.dumps({"id": str(r.id), "image": r.image, "question": r.question, "choices": choices,
                                    "label": choices.index(r.answers[0])}) + "\n")
    (folder / "utils.py").write_text(UTILS)
    (folder / "aimtest_easy_vqa.yaml").write_text(VQA_YAML)
    (folder / "aimtest_easy_vqa_mc.yaml").write_text(MC_YAML)
    return folder


TASKS = ("aimtest_easy_vqa", "aimtest_easy_vqa_mc")


def lmms_eval_cli(tasks, out, model_args: str, *extra, processes: int = 1, cache: str = "aim-cache"):
    """lmms-eval's own command line, in a fresh process (or ``processes`` under accelerate launch)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TQDM_DISABLE="1",
               HF_DATASETS_CACHE=str(tasks / "hf-datasets"), AIM_CACHE=str(tasks / cache))
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"] if processes > 1 else \
        [sys.executable]
    cmd = [*launch, "-m", "lmms_eval", "--model", "aim", "--model_args", model_args,
           "--tasks", ",".join(TASKS), "--include_path", str(tasks), "--limit", str(TEST),
           "--batch_size", "4", "--output_path", str(out), "--log_samples", "--verbosity", "WARNING", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    # lmms-eval 0.7.3 logs an evaluation's error and still exits 0: the results file tells
    assert proc.returncode == 0 and glob.glob(str(out / "*" / "*_results.json")), \
        proc.stdout[-2000:] + proc.stderr[-6000:]


def read_run(out) -> dict:
    """lmms-eval's files in its layout: results and one sample file per task."""
    results = glob.glob(str(out / "pocket" / "*_results.json"))
    assert len(results) == 1, os.listdir(out)
    stamp = os.path.basename(results[0])[:-len("_results.json")]
    samples = {}
    for task in TASKS:
        with open(out / "pocket" / f"{stamp}_samples_{task}.jsonl") as f:
            samples[task] = {s["doc_id"]: s for s in map(json.loads, f)}
    with open(results[0]) as f:
        return {"results": json.load(f), "samples": samples}


def lmms_eval_python(tasks, model_args: str, num_fewshot=None) -> dict:
    """lmms-eval's evaluation (``simple_evaluate``, what its CLI calls) in this process, on the local
    tasks only (no index of its built-in ones): results and samples by task and doc id."""
    from lmms_eval import evaluator
    from lmms_eval.tasks import TaskManager

    manager = TaskManager("WARNING", include_path=str(tasks), include_defaults=False)
    out = evaluator.simple_evaluate(model="aim", model_args=model_args, tasks=list(TASKS), num_fewshot=num_fewshot,
                                    batch_size=4, limit=TEST, log_samples=True, task_manager=manager)
    return {"results": out, "samples": {t: {s["doc_id"]: s for s in out["samples"][t]} for t in TASKS}}


def answer(sample) -> str:
    r = sample["filtered_resps"]
    return r[0] if isinstance(r, list) else r


def nlls(sample) -> list[float]:
    return [float(r[0]) for r in sample["filtered_resps"]]


@pytest.fixture(scope="module")
def cli_run(tasks, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lmms_cli")
    lmms_eval_cli(tasks, folder, f"pretrained=pocket,method=fused,shots={SHOTS},select=random,seed=0")
    return read_run(folder)


@pytest.fixture(scope="module")
def runs(tasks):
    saved = {k: os.environ.get(k) for k in ("AIM_CACHE", "HF_DATASETS_CACHE", "HF_DATASETS_OFFLINE")}
    os.environ.update(AIM_CACHE=str(tasks / "aim-cache"), HF_DATASETS_CACHE=str(tasks / "hf-datasets"),
                      HF_DATASETS_OFFLINE="1")
    try:
        out = {(m, k): lmms_eval_python(tasks, f"pretrained=pocket,method={m},shots={k},select=random,seed=0")
               for m, k in RUNS}
        out["num_fewshot"] = lmms_eval_python(tasks, "pretrained=pocket,method=text", num_fewshot=SHOTS)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return out


@pytest.fixture(scope="module")
def backbone():
    return aim.load_backbone("pocket")


def test_results_and_samples_in_lmms_eval_layout(cli_run, runs):
    """lmms-eval's CLI finds the model by its entry point and writes its files in its layout, with
    the answers its Python API gives."""
    results = cli_run["results"]
    assert results["model_name"] == "aim" or results["model_name_sanitized"] == "pocket"
    assert f"method=fused,shots={SHOTS}" in results["config"]["model_args"]
    assert 0.0 <= results["results"]["aimtest_easy_vqa"]["exact_match,none"] <= 1.0
    assert 0.0 <= results["results"]["aimtest_easy_vqa_mc"]["acc,none"] <= 1.0
    samples = cli_run["samples"]["aimtest_easy_vqa"]
    assert sorted(samples) == list(range(TEST))
    for doc_id, s in samples.items():  # what each answer cost, in lmms-eval's own field
        assert s["token_counts"][0]["input_tokens"] > 0 and s["token_counts"][0]["output_tokens"] >= 1
        assert answer(s) == answer(runs[("fused", SHOTS)]["samples"]["aimtest_easy_vqa"][doc_id])
    for doc_id, s in cli_run["samples"]["aimtest_easy_vqa_mc"].items():
        assert nlls(s) == pytest.approx(nlls(runs[("fused", SHOTS)]["samples"]["aimtest_easy_vqa_mc"][doc_id]),
                                        rel=1e-5, abs=1e-5)


def test_two_processes_give_the_one_process_samples(cli_run, tasks, tmp_path):
    """lmms-eval's data parallelism (accelerate launch, 2 CPU processes, gloo), from an empty cache: the
    processes convert the pocket's LLM once, build each task's bank together and give the samples of
    one process."""
    lmms_eval_cli(tasks, tmp_path, f"pretrained=pocket,method=fused,shots={SHOTS},select=random,seed=0", processes=2,
                  cache="aim-cache-2")
    assert len(os.listdir(tasks / "aim-cache-2" / "lmms-eval" / "banks")) == 2
    two = read_run(tmp_path)
    for doc_id, s in cli_run["samples"]["aimtest_easy_vqa"].items():
        assert answer(two["samples"]["aimtest_easy_vqa"][doc_id]) == answer(s)
        assert two["samples"]["aimtest_easy_vqa"][doc_id]["token_counts"] == s["token_counts"]
    for doc_id, s in cli_run["samples"]["aimtest_easy_vqa_mc"].items():
        assert nlls(two["samples"]["aimtest_easy_vqa_mc"][doc_id]) == pytest.approx(nlls(s), rel=1e-4, abs=1e-4)


def test_demonstrations_cost_tokens_and_fused_ones_fewer(runs):
    def tokens(key):
        return sum(s["token_counts"][0]["input_tokens"] for s in runs[key]["samples"]["aimtest_easy_vqa"].values())

    for key in RUNS:
        assert 0.0 <= runs[key]["results"]["results"]["aimtest_easy_vqa"]["exact_match,none"] <= 1.0

    zero, raw, text, fused = (tokens(k) for k in (("zero", 0), ("raw", SHOTS), ("text", SHOTS), ("fused", SHOTS)))
    assert zero < fused < raw and zero < text < raw
    assert tokens(("fused", 0)) == zero


def test_fused_at_zero_shots_is_the_zero_shot_run(runs):
    for task in ("aimtest_easy_vqa", "aimtest_easy_vqa_mc"):
        a, b = runs[("fused", 0)]["samples"][task], runs[("zero", 0)]["samples"][task]
        assert [str(a[i]["filtered_resps"]) for i in a] == [str(b[i]["filtered_resps"]) for i in a]


def test_same_predictions_as_aim_icl_eval(runs, tasks, backbone, tmp_path):
    """The same questions and demonstrations through `aim icl-eval` give the same answers, per question."""
    records = aim.load_records(f"jsonl:{tasks / 'test.jsonl'}")
    pool = aim.load_records(f"jsonl:{tasks / 'train.jsonl'}")
    config = IclEvalConfig(dataset="easy-vqa-local", methods=("zero", "raw", "text", "fused"), shots=(0, SHOTS),
                           seeds=(0,), select="random", pool="easy-vqa-local-train", batch_size=4, max_new_tokens=10)
    icl_eval(backbone, records, config, str(tmp_path), fuser=load_fuser(None, backbone), pool=pool, progress=False)
    with open(glob.glob(str(tmp_path / "*" / "samples.jsonl"))[0]) as f:
        ours = {(s["method"], s["shots"], s["id"]): s["prediction"] for s in map(json.loads, f)}
    for method, shots in RUNS:
        theirs = runs[(method, shots)]["samples"]["aimtest_easy_vqa"]
        key_method = "zero" if shots == 0 else method
        for doc_id, sample in theirs.items():
            assert answer(sample) == ours[(key_method, shots, str(records[doc_id].id))], (method, doc_id)


def test_likelihoods_equal_backbone_loglikelihood(runs, tasks, backbone):
    """Multiple choice: each choice's figure is the negative of Backbone.loglikelihood of ' choice' after
    the zero-shot prompt, and the answer is the likeliest choice."""
    records = aim.load_records(f"jsonl:{tasks / 'test.jsonl'}")
    samples = runs[("zero", 0)]["samples"]["aimtest_easy_vqa_mc"]
    for doc_id, sample in samples.items():
        r = records[doc_id]
        choices = choices_of(r)
        body = prompt_body(backbone, "zero", load_image(r.image), r.question)  # the reader made the path whole
        liks = backbone.loglikelihood([body] * len(choices), [" " + c for c in choices])
        nll = nlls(sample)
        assert nll == pytest.approx([-lik.logprob for lik in liks], rel=1e-4, abs=1e-4)
        best = min(range(len(nll)), key=nll.__getitem__)
        assert sample["acc"] == float(best == choices.index(r.answers[0]))


def test_num_fewshot_sets_shots_and_multi_round_is_refused(runs):
    """Without shots= the task's --num_fewshot is the number of (multimodal) demonstrations: the run
    equals the one with shots= (lmms-eval's text-only examples in its context are not used)."""
    run = runs["num_fewshot"]
    assert run["results"]["n-shot"]["aimtest_easy_vqa"] == SHOTS
    given = runs[("text", SHOTS)]["samples"]["aimtest_easy_vqa"]
    for doc_id, sample in run["samples"]["aimtest_easy_vqa"].items():
        assert answer(sample) == answer(given[doc_id])
        assert sample["token_counts"] == given[doc_id]["token_counts"]
    from aim.lmms.model import AimModel

    with pytest.raises(aim.errors.AimError, match="multi-round"):
        AimModel.generate_until_multi_round(None, [])


def test_bad_model_args_name_the_fix():
    from aim.lmms.model import AimModel

    with pytest.raises(aim.errors.AimError, match="unknown key.*shotz"):
        AimModel(shotz=4)
    with pytest.raises(aim.errors.AimError, match="method=fuse: use one of"):
        AimModel(method="fuse")
    with pytest.raises(aim.errors.AimError, match="shots=-1"):
        AimModel(shots=-1)


def test_the_entry_point_names_the_model():
    from lmms_eval.models import get_model

    from aim.lmms.model import AimModel

    assert get_model("aim") is AimModel
