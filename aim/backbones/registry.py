"""Backbone names -> adapters, imported on first use; outside packages add their own through the
entry-point group ``aim.backbones`` (``name = "package.module:Class"``)."""
from __future__ import annotations

import importlib
import json
import logging
import os
from importlib.metadata import entry_points
from typing import Optional

import torch

from ..errors import BackboneError

logger = logging.getLogger(__name__)

#: short name -> "module:Class"
BUILTIN = {
    "pocket": "aim.backbones.pocket:PocketBackbone",
    "llava": "aim.backbones.llava:LlavaBackbone",
    "llava_next": "aim.backbones.llava:LlavaNextBackbone",
    "qwen2_vl": "aim.backbones.qwen2_vl:Qwen2VLBackbone",
    "qwen2_5_vl": "aim.backbones.qwen2_vl:Qwen25VLBackbone",
    "idefics2": "aim.backbones.idefics:Idefics2Backbone",
    "idefics3": "aim.backbones.idefics:Idefics3Backbone",
    "smolvlm": "aim.backbones.idefics:SmolVLMBackbone",
}
ENTRY_POINT_GROUP = "aim.backbones"
DEFAULT_BACKBONE = "pocket"


def available() -> dict[str, str]:
    """Every known family name with its dotted path, built-ins first, then entry points."""
    names = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        names.setdefault(ep.name, ep.value)
    return names


def adapter_class(family: str):
    """The adapter class for a family name (imported now)."""
    names = available()
    if family not in names:
        raise BackboneError(f"unknown backbone {family!r}: use one of {', '.join(sorted(names))}, "
                            "a model folder, or a hub id of one of those families")
    module, _, attr = names[family].partition(":")
    return getattr(importlib.import_module(module), attr)


def _model_type(path_or_id: str, trust_remote_code: bool, revision: Optional[str]) -> str:
    if os.path.isdir(path_or_id):
        cfg = os.path.join(path_or_id, "config.json")
        if not os.path.isfile(cfg):
            raise BackboneError(f"{path_or_id} is not a model folder: it has no config.json "
                                "(point --backbone at a folder written by save_pretrained, or a name)")
        try:
            with open(cfg) as f:
                return json.load(f)["model_type"]
        except (ValueError, KeyError) as err:
            raise BackboneError(f"{cfg} is not a transformers config (no model_type): {err}") from err
    names = ", ".join(sorted(available()))
    if path_or_id.startswith(("/", ".", "~")) or path_or_id.count("/") > 1 or os.path.exists(path_or_id):
        raise BackboneError(f"no model folder at {path_or_id} (the path does not exist or is not a folder)")
    if "/" not in path_or_id:  # not a hub id (ORG/NAME) either: no need to ask the hub
        raise BackboneError(f"unknown backbone {path_or_id!r}: use one of {names}, a model folder, "
                            "or a hub id (ORG/NAME) of one of those families")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path_or_id, trust_remote_code=trust_remote_code,
                                          **({"revision": revision} if revision else {})).model_type
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise BackboneError(f"unknown backbone {path_or_id!r}: not a built-in name ({names}), not a model "
                            f"folder, and not loadable as a hub id ({err.__class__.__name__}: {reason})") from err


def load_backbone(name_or_path: str = DEFAULT_BACKBONE, *, dtype: torch.dtype | str = torch.float32,
                  device: str = "cpu", device_map=None, load_in_4bit: bool = False, load_in_8bit: bool = False,
                  trust_remote_code: bool = False, revision: Optional[str] = None, layer: int = -1,
                  max_memory: Optional[dict] = None, offload_folder: Optional[str] = None):
    """Load a backbone by short name (``pocket``), model folder or hub id.

    ``family:path`` forces a family (``llava:/models/my-llava``). ``device_map`` / ``max_memory`` /
    ``offload_folder``: accelerate's big-model loading (a model split over GPUs, CPU and disk)."""
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise BackboneError(f"unknown dtype {dtype!r}: use float32, float16 or bfloat16")
        dtype = getattr(torch, dtype)
    opts = dict(dtype=dtype, device=device, device_map=device_map, load_in_4bit=load_in_4bit,
                load_in_8bit=load_in_8bit, trust_remote_code=trust_remote_code, revision=revision, layer=layer)
    if max_memory or offload_folder:  # only adapters that take them are given them
        opts.update(max_memory=max_memory, offload_folder=offload_folder)
    family, sep, rest = name_or_path.partition(":")
    if sep and family in available():
        if not rest:
            raise BackboneError(f"{name_or_path!r} names no model: {family}:PATH_OR_HUB_ID")
        return adapter_class(family).from_pretrained(rest, **opts)
    if name_or_path in available():
        if adapter_class(name_or_path).ships_weights:
            return adapter_class(name_or_path).from_pretrained(None, **opts)
        folder = f" (for the folder {name_or_path}, write ./{name_or_path})" if os.path.isdir(name_or_path) else ""
        raise BackboneError(f"{name_or_path!r} is a family; give a model too: {name_or_path}:PATH_OR_HUB_ID{folder}")
    model_type = _model_type(name_or_path, trust_remote_code, revision)
    if model_type not in available():
        raise BackboneError(f"{name_or_path}: model type {model_type!r} has no adapter; "
                            f"known: {', '.join(sorted(available()))} (or register one under '{ENTRY_POINT_GROUP}')")
    return adapter_class(model_type).from_pretrained(name_or_path, **opts)
