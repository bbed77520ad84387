"""Backbone names, folders and entry points -> adapters (aim/backbones/registry.py)."""
from __future__ import annotations

import json
import sys
import textwrap

import pytest

import aim
from aim import BackboneError
from aim.backbones import registry
from aim.backbones.idefics import Idefics3Backbone
from aim.backbones.llava import LlavaBackbone

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_an_unknown_name_is_named_with_the_known_ones():
    with pytest.raises(BackboneError) as err:
        aim.load_backbone("no-such-backbone")
    message = str(err.value)
    assert "no-such-backbone" in message and "pocket" in message and "llava" in message


def test_an_unknown_family_in_family_path_form_is_named():
    with pytest.raises(BackboneError, match="'no_such_family'"):
        registry.adapter_class("no_such_family")


def test_a_missing_path_is_named(tmp_path):
    missing = tmp_path / "nothing" / "here"
    with pytest.raises(BackboneError, match="no model folder at .*nothing/here"):
        aim.load_backbone(str(missing))


def test_a_folder_without_config_json_is_one_clear_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(BackboneError) as err:
        aim.load_backbone(str(tmp_path))
    assert str(tmp_path) in str(err.value) and "config.json" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_folder_of_a_family_without_an_adapter(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(BackboneError, match="model type 'bert' has no adapter"):
        aim.load_backbone(str(tmp_path))


def test_a_config_without_model_type(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BackboneError, match="no model_type"):
        aim.load_backbone(str(tmp_path))


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics3", "smolvlm"])
def test_a_family_alone_asks_for_a_model(family):
    with pytest.raises(BackboneError) as err:
        aim.load_backbone(family)
    assert f"{family}:PATH_OR_HUB_ID" in str(err.value)
    with pytest.raises(BackboneError, match="names no model"):
        aim.load_backbone(family + ":")


def test_an_unknown_dtype():
    with pytest.raises(BackboneError, match="'float33'"):
        aim.load_backbone("llava:/models/x", dtype="float33")


def test_family_path_form_forces_the_family(monkeypatch):
    calls = []
    monkeypatch.setattr(Idefics3Backbone, "from_pretrained",
                        classmethod(lambda cls, path, **opts: calls.append((cls, path, opts)) or "loaded"))
    assert aim.load_backbone("smolvlm:/models/my-model", dtype="bfloat16", layer=-2) == "loaded"
    ((cls, path, opts),) = calls
    assert cls.family == "smolvlm" and path == "/models/my-model"
    assert opts["layer"] == -2 and str(opts["dtype"]) == "torch.bfloat16"


def test_family_path_form_loads_a_real_folder(tiny_hf_folders):
    folder = tiny_hf_folders("llava")
    backbone = aim.load_backbone("llava:" + folder)
    assert isinstance(backbone, LlavaBackbone) and backbone.model_id == folder


def test_a_folder_is_read_by_its_model_type(tiny_hf_folders):
    backbone = aim.load_backbone(tiny_hf_folders("llava"))
    assert type(backbone) is LlavaBackbone


def test_a_package_a_processor_needs_is_named(tiny_hf_folders, monkeypatch):
    from transformers.models.smolvlm import processing_smolvlm

    folder = tiny_hf_folders("smolvlm")
    monkeypatch.setattr(processing_smolvlm, "num2words", None)  # as if num2words were not installed
    with pytest.raises(BackboneError) as err:
        aim.load_backbone(folder)
    assert folder in str(err.value) and "pip install num2words" in str(err.value)


def test_pocket_is_the_default_and_maps_to_its_adapter():
    assert registry.DEFAULT_BACKBONE == "pocket"
    assert registry.available()["pocket"] == "aim.backbones.pocket:PocketBackbone"
    assert list(registry.available())[: len(registry.BUILTIN)] == list(registry.BUILTIN)


def test_every_builtin_adapter_imports():
    for name, path in registry.BUILTIN.items():
        if name == "pocket":
            continue
        cls = registry.adapter_class(name)
        assert cls.family == name and path.endswith(":" + cls.__name__)


TOY_MODULE = '''
from aim.backbones.base import Backbone


class ToyBackbone(Backbone):
    family = "toy"
    ships_weights = True  # loads by its name alone, as the pocket backbone does

    @classmethod
    def from_pretrained(cls, path, **opts):
        backbone = cls.__new__(cls)
        backbone.loaded_from, backbone.opts = path, opts
        return backbone

    tokenizer = decoder = lm_head = None

    def _encode(self, segments, last_span=False):
        raise NotImplementedError
'''


@pytest.fixture
def toy_distribution(tmp_path, monkeypatch):
    """An installed distribution (a dist-info folder on sys.path) that declares a backbone
    under the entry-point group ``aim.backbones``."""
    (tmp_path / "aim_toy_backbone.py").write_text(TOY_MODULE)
    info = tmp_path / "aim_toy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aim-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [aim.backbones]
        toy = aim_toy_backbone:ToyBackbone
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("aim_toy_backbone", None)


def test_an_entry_point_adds_a_backbone(toy_distribution):
    assert registry.available()["toy"] == "aim_toy_backbone:ToyBackbone"
    backbone = aim.load_backbone("toy", layer=3)
    assert type(backbone).__name__ == "ToyBackbone"
    assert backbone.loaded_from is None and backbone.opts["layer"] == 3
    backbone = aim.load_backbone("toy:/models/toy-model")
    assert backbone.loaded_from == "/models/toy-model"


def test_an_entry_point_cannot_replace_a_builtin(toy_distribution, tmp_path):
    info = tmp_path / "aim_toy-0.1.dist-info" / "entry_points.txt"
    info.write_text("[aim.backbones]\nllava = aim_toy_backbone:ToyBackbone\n")
    assert registry.available()["llava"] == registry.BUILTIN["llava"]
