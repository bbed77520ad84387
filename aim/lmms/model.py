"""``--model aim`` for lmms-eval: any aim backbone answering any image task of lmms-eval with
zero-shot, raw, text-only or fused demonstrations.

``--model_args`` (comma-separated ``key=value``):

| key | default | meaning |
|---|---|---|
| ``backbone`` (or ``pretrained``) | ``pocket`` | a short name, model folder or hub id (``family:path`` forces a family) |
| ``fuser`` | the backbone's own | a fuser folder or ``identity`` |
| ``method`` | ``fused`` | ``zero``, ``raw``, ``text`` or ``fused`` |
| ``shots`` | the task's ``--num_fewshot`` | demonstrations per query |
| ``select`` | ``random`` | ``random``, ``image``, ``text`` or ``hybrid`` (FAISS over the bank's keys) |
| ``seed`` | 0 | random selection's seed |
| ``bank`` | (built) | a bank folder to use for every task instead of building one |
| ``pool`` | (the task's) | an aim dataset spec to draw demonstrations from instead of the task's split |
| ``pool_limit`` | all | the first N documents of the pool |
| ``storage`` | ``float32`` | number format of a bank built here |
| ``device``, ``dtype`` | cuda if there is one, float32 | where and how the backbone runs |

Each request is answered as ``aim icl-eval`` answers a query: the query is the document's first
visual and ``doc_to_text``; demonstrations come from a bank compressed once per (task, split,
backbone, fuser) under ``$AIM_CACHE/lmms-eval/banks`` and retrieved per query (random draws
depend on the seed and the document's index only, so batching and processes do not change them);
the prompt is assembled by ``aim.prompting.assemble``. lmms-eval's own context string (with its
text-only few-shot examples) is not used: the demonstrations here replace it.
"""
from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Optional

import torch
from lmms_eval.api.instance import GenerationResult, TokenCounts
from lmms_eval.api.model import lmms

from ..api import SELECT, FewShot
from ..backbones import load_backbone
from ..data.spec import load_records
from ..errors import AimError
from ..fusion import load_fuser
from ..processes import group_processes
from ..prompting import METHODS, assemble, prompt_body
from ..storage import STORAGES
from .demos import bank_folder, fewshot_split, records_digest, task_records, visual_of

logger = logging.getLogger(__name__)

ARGS = ("backbone", "pretrained", "fuser", "method", "shots", "select", "seed", "bank", "pool", "pool_limit", "storage", "device",
        "dtype")


def _none(value):
    """lmms-eval passes ``key=None`` as the string 'None'."""
    return None if value in (None, "None", "none", "") else value


class AimModel(lmms):
    """A frozen aim backbone with demonstrations from a bank; see the module's table for its arguments."""

    is_simple = True

    def __init__(self, backbone: str = "pocket", fuser: Optional[str] = None, method: str = "fused",
                 shots: Optional[int] = None, select: str = "random", seed: int = 0, bank: Optional[str] = None,
                 pool: Optional[str] = None, pool_limit: Optional[int] = None, storage: str = "float32",
                 device: Optional[str] = None, dtype: str = "float32", pretrained: Optional[str] = None,
                 batch_size=1, max_batch_size=None, **unknown):
        super().__init__()
        backbone = _none(pretrained) or backbone  # lmms-eval's usual name; it also names the output folder
        if unknown:
            raise AimError(f"--model_args: unknown key(s) {', '.join(sorted(unknown))}; aim takes {', '.join(ARGS)} "
                           "(and lmms-eval's --batch_size)")
        if method not in METHODS:
            raise AimError(f"--model_args method={method}: use one of {', '.join(METHODS)}")
        if select not in SELECT:
            raise AimError(f"--model_args select={select}: use one of {', '.join(SELECT)}")
        if storage not in STORAGES:
            raise AimError(f"--model_args storage={storage}: use one of {', '.join(STORAGES)}")
        shots, pool_limit = _none(shots), _none(pool_limit)
        for key, value in (("shots", shots), ("seed", seed), ("pool_limit", pool_limit)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise AimError(f"--model_args {key}={value}: give a whole number, 0 or more")
        self.method, self.shots, self.select, self.seed = method, shots, select, seed
        self.pool, self.pool_limit, self.storage = _none(pool), pool_limit, storage
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 8
        procs = group_processes()
        self._rank, self._world_size = procs.rank, procs.world
        device = _none(device) or ("cuda" if torch.cuda.is_available() else "cpu")
        self.backbone = load_backbone(backbone, device=procs.device(str(device)), dtype=dtype)
        self.fuser = load_fuser(_none(fuser), self.backbone) if method == "fused" or _none(bank) else None
        self._bank = _none(bank)
        self._fewshot: dict[str, FewShot] = {}  # task -> its demonstrations
        self._pool_split: dict[str, str] = {}  # task -> the split its demonstrations come from

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    # ----------------------------------------------------------------- demonstrations
    def shots_for(self, task) -> int:
        if self.method == "zero":
            return 0
        if self.shots is not None:
            return self.shots
        return int(task.config.num_fewshot or 0)

    def fewshot(self, task) -> FewShot:
        """The task's demonstrations: a bank compressed once (or the ``bank`` given) and, for raw and
        text prompts, the records it was made from."""
        name = task.config.task
        if name in self._fewshot:
            return self._fewshot[name]
        fuser = self.fuser or load_fuser("identity", self.backbone)
        fs = FewShot(self.backbone, fuser)
        procs = group_processes()  # lmms-eval's process group exists once requests come
        if self._bank is not None:
            fs.open_bank(self._bank)
        else:
            if self.pool is not None:
                from ..eval.runner import records_fingerprint

                records = load_records(self.pool, self.pool_limit)
                label, parts = f"pool-{self.pool}", {"pool": self.pool, "records": records_fingerprint(records)}
            else:
                split = fewshot_split(task)
                records = task_records(task, split, self.pool_limit)
                label = f"{name}-{split}"
                parts = {"task": name, "split": split, "dataset": getattr(task.dataset[split], "_fingerprint", None),
                         "records": records_digest(records), "count": len(records)}
                self._pool_split[name] = split
            parts.update(backbone=self.backbone.fingerprint(layer=fuser.config.layer), fuser=fuser.fingerprint(),
                         storage=self.storage)
            folder = bank_folder(label, parts)
            logger.info("task %s: %d demonstrations, bank %s", name, len(records), folder)
            # lmms-eval's processes build the bank together (each fuses its share) and all read it
            fs.compress(records, folder, batch_size=self.batch_size, storage=self.storage, progress=procs.main,
                        procs=procs)
        if procs.main:  # the index file is written once (under the bank's lock), then read by the others
            fs.select_index(self.select)
        procs.wait()
        fs.select_index(self.select)
        self._fewshot[name] = fs
        return fs

    def _queries(self, requests: list) -> list[tuple]:
        """Per request: (task object, doc id, split, image, question)."""
        out = []
        for req in requests:
            doc_to_visual, doc_id, task_name, split = req.args[2:6]
            task = doc_to_visual.__self__
            doc = self.task_dict[task_name][split][doc_id]
            out.append((task, doc_id, split, visual_of(task_name, doc_to_visual(doc)), str(task.doc_to_text(doc))))
        return out

    def _prompt_parts(self, queries: list) -> tuple:
        """One task's queries -> (method, images, questions, demos, fused) as ``aim.prompting`` takes them."""
        task = queries[0][0]
        shots = self.shots_for(task)
        images = [q[3] if self.backbone.accepts_images else None for q in queries]
        questions = [q[4] for q in queries]
        if shots == 0:
            return "zero", images, questions, None, None
        fs = self.fewshot(task)
        own = self._pool_split.get(task.config.task)
        exclude = [f"{q[2]}-{q[1]}" for q in queries] if own in {q[2] for q in queries} else None
        chosen = fs.demo_ids(images, questions, shots, self.select, self.seed, exclude=exclude,
                             query_numbers=[q[1] for q in queries])
        return (self.method, images, questions, *fs.prompt_demos(chosen, self.method))

    def _groups(self, requests: list, key) -> "OrderedDict[tuple, list[int]]":
        """Request positions grouped by task (and ``key``), in batches of ``batch_size``."""
        groups: OrderedDict = OrderedDict()
        for i, req in enumerate(requests):
            groups.setdefault((req.args[4] if len(req.args) >= 6 else "", key(req)), []).append(i)
        batches = OrderedDict()
        for k, positions in groups.items():
            for s in range(0, len(positions), self.batch_size):
                batches[(k, s)] = positions[s:s + self.batch_size]
        return batches

    # ----------------------------------------------------------------- requests
    @torch.no_grad()
    def generate_until(self, requests: list) -> list:
        """Greedy answers (or beam search with ``num_beams``), cut at the task's ``until`` strings."""
        out: list = [None] * len(requests)
        batches = self._groups(requests, lambda r: json.dumps(r.args[1], sort_keys=True, default=str))
        bar = _bar(len(requests), "aim", self.rank)
        for positions in batches.values():
            reqs = [requests[i] for i in positions]
            gen_kwargs = dict(reqs[0].args[1])
            until = gen_kwargs.pop("until", None) or ["\n"]
            until = [until] if isinstance(until, str) else list(until)
            if gen_kwargs.get("do_sample"):
                logger.warning("do_sample is set; aim decodes greedily (or with num_beams)")
            method, images, questions, demos, fused = self._prompt_parts(self._queries(reqs))
            batch = assemble(self.backbone, method, images, questions, demos=demos, fused=fused)
            gens = self.backbone.generate(batch, max_new_tokens=int(gen_kwargs.get("max_new_tokens") or 32),
                                          stop=tuple(until), num_beams=int(gen_kwargs.get("num_beams") or 1))
            for i, g in zip(positions, gens):
                out[i] = GenerationResult(g.text, TokenCounts(input_tokens=g.prompt_tokens, output_tokens=g.new_tokens))
            bar.update(len(positions))
        bar.close()
        return out

    @torch.no_grad()
    def loglikelihood(self, requests: list) -> list:
        """Per request: (negative log-likelihood of the continuation, whether it is the greedy one).
        lmms-eval picks the choice with the lowest figure, so it is the continuation's summed negative
        log-probability (``Backbone.loglikelihood``) after the same prompt ``generate_until`` would get."""
        out: list = [None] * len(requests)
        bar = _bar(len(requests), "aim", self.rank)
        for positions in self._groups(requests, lambda r: "").values():
            reqs = [requests[i] for i in positions]
            if len(reqs[0].args) == 2:  # an unconditional request (acc_mutual_info): the text alone
                bodies = [self.backbone.query_body(None, r.args[0]) for r in reqs]
                continuations = [r.args[1] for r in reqs]
            else:
                method, images, questions, demos, fused = self._prompt_parts(self._queries(reqs))
                bodies = [prompt_body(self.backbone, method, image, question, demos[j] if demos else (),
                                      fused[j] if fused else ())
                          for j, (image, question) in enumerate(zip(images, questions))]
                continuations = []
                for r in reqs:
                    cont = r.args[1]  # a string, or doc_to_target for loglikelihood tasks
                    if callable(cont):
                        cont = cont(self.task_dict[r.args[4]][r.args[5]][r.args[3]])
                    continuations.append(str(cont))
            for i, lik in zip(positions, self.backbone.loglikelihood(bodies, continuations, self.batch_size)):
                out[i] = GenerationResult((-lik.logprob, lik.greedy))  # a tuple kept whole by lmms-eval 0.7.3
            bar.update(len(positions))
        bar.close()
        return out

    def generate_until_multi_round(self, requests: list) -> list:
        raise AimError("aim's lmms-eval model answers generate_until and loglikelihood requests; multi-round tasks "
                       "(generate_until_multi_round) are not supported: run them with another --model")


def _bar(total: int, desc: str, rank: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="request", disable=rank != 0, leave=False)
