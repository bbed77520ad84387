"""``aim icl-eval``: every method side by side on a tiny LLaVA and a small dataset of image files.

Behaviour checked: the output files and their keys; zero-shot figures equal at every shot count and
at shots 0 of every method; fused prompts cost exactly zero-shot tokens plus the fused tokens;
a query never sees itself; resuming after an interrupt equals an uninterrupted run; context-length
skips are reported; episode records bring their own demonstrations; the command line.
"""
import json
import os
import types

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import aim
from aim.cli import cli
from aim.data.record import Record
from aim.eval.config import IclEvalConfig
from aim.eval.tasks import choose_metric
from aim.eval.runner import IclEval, icl_eval
from aim.fusion import load_fuser

WORDS = ["red", "blue", "green", "circle", "square", "yes", "no", "two"]
TIMING = ("latency_s", "retrieval_s", "peak_memory_bytes")


@pytest.fixture(scope="module")
def llava(tiny_hf_folders, single_thread_torch):
    return aim.load_backbone(tiny_hf_folders("llava"))


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Eight questions about small image files."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        path = str(folder / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        out.append(Record(f"q{i}", path, f"what is thing {i}?", [WORDS[i]]))
    return out


def config(**overrides):
    base = dict(dataset="tiny", pool="tiny", methods=("zero", "raw", "text", "fused"), shots=(0, 2, 3),
                select="random", seeds=(0, 1), batch_size=3, max_new_tokens=3)
    return IclEvalConfig(**dict(base, **overrides))


def run(llava, records, out, progress=False, **overrides):
    run_id = overrides.pop("run_id", "run")
    on_batch = overrides.pop("on_batch", None)
    return icl_eval(llava, records, config(**overrides), str(out), run_id=run_id,
                    fuser=load_fuser("identity", llava), pool=records, progress=progress, on_batch=on_batch)


def samples_of(doc):
    with open(doc["files"]["samples"]) as f:
        return [json.loads(line) for line in f]


def key(s):
    return s["method"], s["shots"], s["seed"], s["id"]


def without_timing(samples):
    return sorted(({k: v for k, v in s.items() if k not in TIMING} for s in samples), key=key)


def figures(doc):
    """Everything in the results that does not depend on timing."""
    out = {}
    for method, row in doc["results"]["tiny"].items():
        for k, cell in row.items():
            out[method, k] = {n: cell.get(n) for n in ("status", "accuracy", "vqa_accuracy", "exact_match",
                                                        "prompt_tokens", "n", "seeds", "reason")}
    return out


@pytest.fixture(scope="module")
def full_run(llava, records, tmp_path_factory):
    return run(llava, records, tmp_path_factory.mktemp("full"), progress=True)


def test_outputs_and_their_keys(full_run):
    doc = full_run
    folder = doc["folder"]
    for name in ("results.json", "samples.jsonl", "results.md", "results.png", "config.json"):
        assert os.path.isfile(os.path.join(folder, name)), name
    with open(os.path.join(folder, "results.json")) as f:
        saved = json.load(f)
    for k in ("results", "configuration", "versions", "backbone", "fuser", "memory", "bank", "metric",
              "context_length", "shots", "methods", "seeds_run"):
        assert k in saved, k
    assert set(saved["versions"]) == {"aim", "torch", "transformers"}
    assert saved["metric"] == "vqa_accuracy" and saved["memory"]["kind"] == "cpu_peak_rss_growth"
    cell = saved["results"]["tiny"]["fused"]["3"]
    assert cell["status"] == "ok" and cell["n"] == 8 and cell["seeds"] == [0, 1]
    for k in ("accuracy", "vqa_accuracy", "exact_match"):
        assert set(cell[k]) >= {"mean", "std", "per_seed"} and set(cell[k]["per_seed"]) == {"0", "1"}
    for k in ("prompt_tokens", "latency_s", "retrieval_s", "peak_memory_bytes"):
        assert cell[k] >= 0
    # one zero-shot cell run once, 3 methods x 2 shot counts x 2 seeds, 8 records each
    samples = samples_of(doc)
    assert len(samples) == 8 + 3 * 2 * 2 * 8
    assert len({key(s) for s in samples}) == len(samples)
    for s in samples:
        assert len(s["demo_ids"]) == s["shots"] and s["id"] not in s["demo_ids"]  # never its own demonstration
        assert set(s) >= {"method", "shots", "seed", "id", "demo_ids", "prediction", "answers", "score",
                          "prompt_tokens"}
    table = open(os.path.join(folder, "results.md")).read()
    assert "| fused |" in table and "±" in table


def test_zero_shot_figures_at_every_shot_count(full_run):
    rows = full_run["results"]["tiny"]
    zero = rows["zero"]["0"]
    strip = lambda c: {k: v for k, v in c.items() if k != "same_as"}  # noqa: E731
    for k in ("0", "2", "3"):
        assert strip(rows["zero"][k]) == strip(zero)
    for method in ("raw", "text", "fused"):
        assert strip(rows[method]["0"]) == strip(zero) and rows[method]["0"]["same_as"] == "zero/0"
        assert rows[method]["2"] != zero


def test_fused_tokens_add_exactly(full_run):
    samples = samples_of(full_run)
    bank = aim.DemoBank.open(full_run["bank"]["folder"])
    zero = {s["id"]: s["prompt_tokens"] for s in samples if s["method"] == "zero"}
    fused = [s for s in samples if s["method"] == "fused"]
    assert fused
    for s in fused:
        assert s["prompt_tokens"] == zero[s["id"]] + sum(bank.fused(d).shape[0] for d in s["demo_ids"])
    # the identity fuser keeps the demonstrations' text: text-only prompts are the same length and
    # selection is shared, so they saw the same demonstrations
    text = {key(s)[1:]: s for s in samples if s["method"] == "text"}
    for s in fused:
        t = text[key(s)[1:]]
        assert t["demo_ids"] == s["demo_ids"] and t["prompt_tokens"] == s["prompt_tokens"]


def test_resume_equals_an_uninterrupted_run(llava, records, full_run, tmp_path):
    class Stop(Exception):
        pass

    seen = []

    def stop_after_five(cell, samples):
        seen.append(cell)
        if len(seen) == 5:
            raise Stop

    with pytest.raises(Stop):
        run(llava, records, tmp_path, on_batch=stop_after_five)
    path = os.path.join(tmp_path, "run", "samples.jsonl")
    with open(path, "a") as f:
        f.write('{"method": "text", "shots": 2, "se')  # a line cut short by a killed run
    again = []
    doc = run(llava, records, tmp_path, on_batch=lambda cell, samples: again.append(len(samples)))
    total = 8 / 3  # batches per cell (8 records, batch 3) -> 3
    assert len(seen) + len(again) == 13 * int(np.ceil(total))  # nothing answered twice
    assert without_timing(samples_of(doc)) == without_timing(samples_of(full_run))
    assert figures(doc) == figures(full_run)


def test_another_configuration_in_the_same_run_folder(llava, records, full_run):
    out = os.path.dirname(full_run["folder"])
    with pytest.raises(aim.AimError, match=r"another configuration \(differs in max_new_tokens, shots\)"):
        run(llava, records, out, shots=(0, 2), max_new_tokens=4)


def test_a_run_folder_without_samples_takes_a_new_configuration(llava, records, tmp_path):
    with pytest.raises(aim.AimError, match="no demo bank"):  # fails before answering anything
        icl_eval(llava, records, config(pool=None), str(tmp_path), run_id="r", fuser=load_fuser("identity", llava),
                 progress=False)
    doc = run(llava, records, tmp_path, run_id="r", methods=("zero",), shots=(0,))
    assert doc["configuration"]["methods"] == ["zero"] and doc["samples"] == 8


def test_default_run_id_follows_the_configuration(llava, records, tmp_path):
    a = IclEval(llava, records, config(methods=("zero",)), str(tmp_path))
    b = IclEval(llava, records, config(methods=("zero",)), str(tmp_path))
    c = IclEval(llava, records, config(methods=("zero",), max_new_tokens=5), str(tmp_path))
    assert a.run_id == b.run_id != c.run_id and a.run_id.startswith("tiny-")


def test_bank_without_the_keys_a_selection_needs(llava, records, full_run, tmp_path):
    with pytest.raises(aim.AimError, match="needs text keys"):
        icl_eval(llava, records, config(select="text"), str(tmp_path), fuser=load_fuser("identity", llava),
                 bank=full_run["bank"]["folder"], progress=False)


def test_prompts_longer_than_the_context_are_reported(llava, records, full_run, tmp_path, monkeypatch):
    # raw prompts at 2 shots hold two images more than text prompts: a context between the two
    two = [s for s in samples_of(full_run) if s["shots"] == 2]
    raw = min(s["prompt_tokens"] for s in two if s["method"] == "raw")
    text = max(s["prompt_tokens"] for s in two if s["method"] == "text")
    assert raw > text
    context = text + 3  # room for the prompt and 3 new tokens
    assert llava.context_length == 1024  # the tiny config's max_position_embeddings
    monkeypatch.setattr(type(llava), "context_length", property(lambda self: context))
    doc = run(llava, records, tmp_path, methods=("zero", "raw", "text"), shots=(0, 2, 3), seeds=(0, 1))
    rows = doc["results"]["tiny"]
    for k in ("2", "3"):
        assert rows["raw"][k]["status"] == "skipped"
        assert rows["raw"][k]["reason"].startswith("prompt ") and f"> context {context}" in rows["raw"][k]["reason"]
    assert rows["text"]["2"]["status"] == "ok" and rows["raw"]["0"]["status"] == "ok"
    samples = samples_of(doc)
    assert not [s for s in samples if s["method"] == "raw" and s["seed"] == 1]  # the other seeds are not tried
    table = open(doc["files"]["table"]).read()
    assert "skipped: prompt" in table and f"> context {context}" in table


def test_a_backbone_without_images(llava, records, full_run, tmp_path, monkeypatch):
    monkeypatch.setattr(type(llava), "accepts_images", False)
    doc = run(llava, records, tmp_path, methods=("zero", "raw", "text"), shots=(0, 2), seeds=(0,))
    rows = doc["results"]["tiny"]
    assert rows["raw"]["2"] == {"status": "skipped", "reason": "the backbone takes no images"}
    assert rows["text"]["2"]["status"] == "ok"
    assert rows["zero"]["0"]["prompt_tokens"] < full_run["results"]["tiny"]["zero"]["0"]["prompt_tokens"]
    assert not [s for s in samples_of(doc) if s["method"] == "raw"]


def episode_records(records):
    """Label-binding episodes: each query brings made-up-word demonstrations of its own."""
    words = ["dax", "wug"]
    out = []
    for i, r in enumerate(records[:4]):
        demos = [Record(f"e{i}-d{j}", records[4 + j].image, "what is this?", [words[j % 2]]) for j in range(4)]
        out.append(Record(f"e{i}", r.image, "what is this?", [words[i % 2]], {"episode": {"demos": demos}}))
    return out


def test_episode_records_bring_their_own_demonstrations(llava, records, tmp_path, monkeypatch):
    fake = types.ModuleType("aim.data.binding")
    # the seed picks which demonstrations, as aim.data.binding does
    fake.episode_demos = lambda record, k, seed=0: record.extra["episode"]["demos"][seed:seed + k]
    monkeypatch.setattr("aim.eval.runner.binding", fake)
    episodes = episode_records(records)
    assert choose_metric(episodes) == "exact_match"
    doc = icl_eval(llava, episodes, IclEvalConfig(dataset="episodes", shots=(0, 2), seeds=(0, 1), batch_size=3,
                                                  max_new_tokens=3),
                   str(tmp_path), fuser=load_fuser("identity", llava), progress=False)
    assert doc["metric"] == "exact_match" and doc["bank"] is None and doc["seeds_run"] == [0, 1]
    samples = samples_of(doc)
    zero = {s["id"]: s["prompt_tokens"] for s in samples if s["method"] == "zero"}
    for s in samples:
        if s["shots"]:
            assert s["demo_ids"] == [f"{s['id']}-d{s['seed']}", f"{s['id']}-d{s['seed'] + 1}"]
    for s in (s for s in samples if s["method"] == "fused"):
        own = [d for d in episode_records(records) if d.id == s["id"]][0].extra["episode"]["demos"]
        demos = own[s["seed"]:s["seed"] + 2]
        tokens = sum(len(llava.demo_token_ids(aim.Demo(None, d.question, d.answer))) for d in demos)
        assert s["prompt_tokens"] == zero[s["id"]] + tokens


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="no Fashion-MNIST")
def test_label_binding_episodes(llava, tmp_path):
    from aim.data.binding import binding_records

    episodes = binding_records("test", ways=2, n=3, max_shots=2)
    doc = icl_eval(llava, episodes, IclEvalConfig(dataset="binding", methods=("zero", "fused"), shots=(0, 2),
                                                  seeds=(0, 1), batch_size=3, max_new_tokens=3),
                   str(tmp_path), fuser=load_fuser("identity", llava), progress=False)
    assert doc["metric"] == "exact_match" and doc["results"]["binding"]["fused"]["2"]["n"] == 3
    fused = [s for s in samples_of(doc) if s["method"] == "fused"]
    assert len(fused) == 6 and all(len(s["demo_ids"]) == 2 for s in fused)


def test_metric_choice():
    vqa = Record("a", "x.png", "q?", ["yes"] * 10)
    label = Record("b", "x.png", "q?", ["bag", "handbag"], {"label": 8})
    assert choose_metric([vqa]) == "vqa_accuracy" and choose_metric([label]) == "exact_match"
    assert choose_metric([vqa], "exact_match") == "exact_match"
    assert choose_metric([Record("c", "x", "q", ["a"], {"metric": "exact_match"})]) == "exact_match"


def test_bad_options_are_clear_errors():
    with pytest.raises(aim.AimError, match="unknown method.*'foo'.*zero, raw, text, fused"):
        IclEvalConfig(dataset="d", methods=("zero", "foo"))
    result = CliRunner().invoke(cli, ["icl-eval", "--dataset", "easy-vqa:test", "--methods", "zero,foo"])
    assert result.exit_code == 2 and "Invalid value for '--methods'" in result.output and "'foo'" in result.output
    result = CliRunner().invoke(cli, ["icl-eval", "--dataset", "easy-vqa:test", "--shots", "0,four"])
    assert result.exit_code == 2 and "--shots must be comma-separated integers" in result.output


def test_cli_help():
    result = CliRunner().invoke(cli, ["icl-eval", "--help"])
    assert result.exit_code == 0
    for option in ("--methods", "--shots", "--select", "--seeds", "--bank", "--pool", "--run-id", "--output"):
        assert option in result.output


@pytest.mark.skipif(__import__("importlib").util.find_spec("easy_vqa") is None, reason="easy-vqa not installed")
def test_cli_end_to_end(tiny_hf_folders, single_thread_torch, tmp_path):
    args = ["icl-eval", "--backbone", tiny_hf_folders("llava"), "--fuser", "identity", "--dataset", "easy-vqa:test",
            "--limit", "4", "--pool", "easy-vqa:train", "--pool-limit", "10", "--shots", "0,2", "--seeds", "0,1",
            "--batch-size", "4", "--max-new-tokens", "3", "--output", str(tmp_path), "--run-id", "cli", "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "| method | 0 shots | 2 shots |" in result.output and "| fused |" in result.output
    with open(tmp_path / "cli" / "results.json") as f:
        doc = json.load(f)
    assert set(doc["results"]["easy-vqa:test"]) == {"zero", "raw", "text", "fused"}
    assert doc["configuration"]["pool"] == "easy-vqa:train" and doc["bank"]["demos"] == 10
    again = CliRunner().invoke(cli, args)  # everything done: resumes to the same table
    table = lambda out: out[out.index("| method"):out.index("\nbackbone")]  # noqa: E731
    assert again.exit_code == 0 and table(again.output) == table(result.output)


def test_run_folder_resumes_the_same_pocket_weights_from_another_folder(tmp_path):
    """A run's config records the backbone fingerprint; the pocket's revision digests its weights, so
    a moved checkpoint resumes the run, while other weights (or another hub model) are refused."""
    from aim.eval.run_folder import RunFolder

    def cfg(model, revision, family="pocket"):
        return {"dataset": "d", "shots": [0, 2], "backbone": {"family": family, "model": model, "revision": revision}}

    path = str(tmp_path / "run")
    RunFolder(path, cfg("/old/next", "abc"))
    with open(os.path.join(path, "samples.jsonl"), "w") as f:
        f.write('{"method": "zero", "shots": 0, "seed": 0, "id": "1"}\n')
    RunFolder(path, cfg("/new/next", "abc"))  # same weights, moved: resumes
    for other, field in [(cfg("/old/next", "def"), "backbone.revision"),
                         (cfg("llava-a", "abc", "llava"), "backbone.family, backbone.model")]:
        with pytest.raises(aim.AimError, match=rf"differs in {field}\)"):
            RunFolder(path, other)
