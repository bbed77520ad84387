"""The few-shot evaluation loop behind ``aim icl-eval``: every method at every shot count and seed.

A *cell* is one (method, shots, seed). The loop answers every record of the dataset in every cell,
batch by batch, and appends each batch's samples to ``samples.jsonl`` as it goes, so a killed run
started again skips what is done and ends with the same samples and figures.

- ``zero`` ignores shots and runs once (at shots 0, with the first seed); every other method's
  shots 0 *is* that zero-shot prompt, so it is reported from the same samples, not run again.
- ``raw`` shows k demonstrations with their images, ``text`` their texts only, ``fused`` their
  fused tokens from the bank. All go through ``aim.prompting.assemble``, then
  ``Backbone.generate`` (greedy, or beam search with ``num_beams`` > 1) or, with
  ``scoring="likelihood"``, ``Backbone.rank_classes`` over each record's class list.
- What a sample is scored with depends on the task (``aim.eval.tasks``): VQA accuracy, captioning
  (CIDEr, computed per seed in ``report``), classification (accuracy, ROC-AUC when binary).
- Demonstrations come from a ``DemoBank`` through ``FewShot.demo_ids`` (the selection of the Python
  API); a query never sees itself when the pool is the dataset. Records that carry an
  ``extra["episode"]`` (label-binding episodes) bring their own demonstrations
  (``aim.data.binding.episode_demos(record, k, seed)``); ``fused`` fuses those on the fly.
- Vector methods (``live``, ``mimic``, ``mtv``) answer the zero-shot prompt with their vectors attached to the
  backbone (``aim.vectors``): one cell, at shots 0 with the first seed, reported at every shot count.
- Seeds change random selection and episodes' draws: with similarity selection (and no episodes)
  the first seed is run and the others would repeat it.
- A prompt longer than the backbone's context (or a raw prompt for a backbone that takes no
  images) makes its (method, shots) *skipped*, with the reason, in samples and results.
- Under ``accelerate launch`` with N processes (aim/processes.py) each process loads the backbone
  on its own device and answers every N-th batch of each cell (the batches one process would run),
  appending to its own sample file; the bank is built by all of them (``compress_demos`` deals out
  its shards). When all are done, the main process merges the samples into ``samples.jsonl`` in the
  plan's order and writes the reports, so the files hold what one process writes. A kill of any
  process loses at most the batches in flight: the rerun (with any number of processes) skips every
  sample any file holds.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..api import SELECT_KEYS, FewShot
from ..backbones.base import Backbone, Demo
from ..data import binding
from ..data.record import Record
from ..errors import AimError
from ..fusion import Fuser
from ..images import load_image
from ..locking import FolderLock
from ..processes import Processes, processes
from ..prompting import assemble
from ..vectors.config import VECTOR_METHODS
from .config import IclEvalConfig, is_episode, shows_demos
from .memory import PeakMemory
from .tasks import check_scoring, choose_metric, classes_of, metrics_for, sample_scores, task_of
from .run_folder import RunFolder, sample_key

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Cell:
    method: str
    shots: int
    seed: int


@dataclass
class Plan:
    """The cells to run and what the report needs to lay them out."""

    dataset: str
    methods: tuple
    shots: tuple
    seeds: tuple  # the seeds actually run
    zero_seed: int
    metric: str
    task: str = "vqa"
    metrics: list = field(default_factory=list)  # every figure a cell reports
    cells: list = field(default_factory=list)
    static_skips: dict = field(default_factory=dict)  # method -> reason, known before running


def episode_demos(record: Record, shots: int, seed: int) -> list[Record]:
    """The demonstrations an episode record brings (``aim.data.binding``), in prompt order."""
    demos = binding.episode_demos(record, shots, seed=seed)
    if len(demos) != shots:
        raise AimError(f"episode record {record.id} gave {len(demos)} demonstrations for {shots} shots")
    return demos


def records_fingerprint(records: Sequence[Record]) -> dict:
    """What a resume must find unchanged: the record count and a SHA-256 over every record's id,
    question, answers and image (a file's path, size and modification time; a stored image's bytes'
    digest, read without decoding it; an in-memory image's pixels). A dataset edited between a kill
    and a resume gives another digest."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([str(r.id), r.question, list(r.answers)]).encode())
        if isinstance(r.image, str):
            try:
                st = os.stat(r.image)
                h.update(f"{r.image}|{st.st_size}|{st.st_mtime_ns}".encode())
            except OSError:
                h.update(f"{r.image}|missing".encode())
        elif r.image is not None and "sha256" in r.image.info:
            h.update(r.image.info["sha256"].encode())
        elif r.image is not None:
            h.update(r.image.mode.encode() + str(r.image.size).encode() + r.image.tobytes())
    return {"count": len(records), "sha256": h.hexdigest()[:16]}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", os.path.basename(str(text).rstrip("/")) or str(text)).strip("-")[:40]


def default_run_id(run_config: dict) -> str:
    """``{dataset}-{backbone}-{digest of the configuration}``: the same options resume the same run."""
    digest = hashlib.sha256(json.dumps(run_config, sort_keys=True).encode()).hexdigest()[:8]
    model = (run_config.get("backbone") or {}).get("model", "model")
    return f"{slug(run_config['dataset'])}-{slug(model)}-{digest}"


def same_source(a: Optional[str], b: Optional[str]) -> bool:
    """Whether two dataset specs name the same records (equal specs, or the same file/folder)."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def prepare_bank(fewshot: FewShot, folder: str, pool: Optional[Sequence[Record]], select: str,
                 batch_size: int = 8, progress: bool = True) -> dict:
    """Open the bank at ``folder`` (refusing one of another backbone or fuser, or without the keys
    ``select`` reads) and add the pool's missing demonstrations, or build it from the pool."""
    start = time.perf_counter()
    keys = list(SELECT_KEYS[select])
    exists = os.path.isfile(os.path.join(folder, "bank.json"))
    have = None
    if exists:
        bank = fewshot.open_bank(folder)
        have = bank.manifest.get("key_kinds")
        missing = [k for k in keys if have is not None and k not in have]
        if missing:
            raise AimError(f"bank {folder} holds {', '.join(have) or 'no'} keys; --select {select} needs "
                           f"{', '.join(missing)} keys: build a bank with `aim compress-demos --keys "
                           f"{','.join(sorted(set(keys) | set(have)))}` or pass another --bank")
    if pool:
        if not exists or any(str(r.id) not in fewshot.bank for r in pool):
            logger.info("bank %s: fusing the pool's demonstrations that are not in it yet", folder)
            fewshot.compress(pool, folder, batch_size=batch_size, keys=have or keys, progress=progress)
        fewshot.records.update((str(r.id), r) for r in pool)
    elif not exists:
        raise AimError(f"no demo bank at {folder} and no pool to build it from: pass --pool SPEC (the "
                       "demonstrations), or --bank FOLDER of an existing bank")
    bank = fewshot.bank
    return {"folder": os.path.abspath(folder), "demos": len(bank), "key_kinds": bank.manifest.get("key_kinds"),
            "fused_tokens_per_demo": bank.manifest["tokens"] / max(1, len(bank)),
            "seconds": time.perf_counter() - start}


class IclEval:
    """One evaluation run: ``IclEval(...).run()`` returns the results document (see ``report``)."""

    def __init__(self, backbone: Backbone, records: Sequence[Record], config: IclEvalConfig, output: str,
                 run_id: Optional[str] = None, fuser: Optional[Fuser] = None,
                 pool: Optional[Sequence[Record]] = None, bank: Optional[str] = None, progress: bool = True,
                 on_batch: Optional[Callable[[Cell, list], None]] = None, procs: Optional[Processes] = None,
                 index_kind: str = "auto", vectors: Optional[dict] = None):
        if not records:
            raise AimError(f"dataset {config.dataset} has no records")
        ids = [str(r.id) for r in records]
        if len(set(ids)) != len(ids):
            raise AimError(f"dataset {config.dataset} repeats record ids; an evaluation needs one id per record")
        self.backbone, self.records, self.config = backbone, list(records), config
        self.progress, self.on_batch = progress, on_batch
        self.procs = procs or processes()
        self.task = task_of(self.records, config.task)
        self.metric = choose_metric(self.records, config.metric, self.task)
        check_scoring(self.records, config.scoring, self.task)
        self.metrics = [self.metric] + [m for m in metrics_for(self.task, self.records) if m != self.metric]
        self.vectors = dict(vectors or {})
        for method in config.methods:
            if method in VECTOR_METHODS and method not in self.vectors:
                raise AimError(f"method {method} needs its vectors: pass --vectors FOLDER (from `aim train vectors "
                               f"--method {method}`)")
        for method, module in self.vectors.items():
            if method not in config.methods:
                raise AimError(f"--vectors {module.source} holds {method} vectors but --methods does not list {method}")
            module.check_backbone(backbone)
        few = [m for m in config.methods if shows_demos(m)] if any(k > 0 for k in config.shots) else []
        self.needs_bank = bool(few) and any(not is_episode(r) for r in self.records)
        needs_fuser = self.needs_bank or ("fused" in few and any(is_episode(r) for r in self.records))
        if needs_fuser and fuser is None:
            raise AimError(f"methods {', '.join(few)} with shots > 0 need a fuser (the demo bank is made with it): "
                           "pass --fuser FOLDER or --fuser identity")
        self.fuser = fuser if needs_fuser else None
        self.fewshot = FewShot(backbone, self.fuser, index_kind=index_kind)
        self.pool = pool
        self.exclude_self = same_source(config.pool, config.dataset)
        self.run_config = dict(asdict(config), metric=self.metric, task=self.task, backbone=backbone.fingerprint(),
                               fuser=self.fuser.fingerprint() if self.fuser is not None else None,
                               vectors={m: v.fingerprint() for m, v in sorted(self.vectors.items())} or None,
                               bank=os.path.abspath(bank) if bank else None,
                               records=records_fingerprint(self.records),
                               pool_records=records_fingerprint(pool) if pool else None)
        self.run_config["methods"], self.run_config["shots"] = list(config.methods), list(config.shots)
        self.run_config["seeds"] = list(config.seeds)
        self.run_id = run_id or default_run_id(self.run_config)
        self.folder_path = os.path.join(output, self.run_id)
        self.folder: Optional[RunFolder] = None  # opened by run(), under the folder's lock
        self.bank_folder = bank or os.path.join(self.folder_path, "bank")
        self.bank_info: Optional[dict] = None

    # ------------------------------------------------------------------ planning
    def plan(self) -> Plan:
        c = self.config
        # similarity selection is deterministic; random selection and episodes draw by seed
        draws = c.select == "random" or any(is_episode(r) for r in self.records)
        seeds = c.seeds if draws else c.seeds[:1]
        plan = Plan(c.dataset, c.methods, c.shots, seeds, c.seeds[0], self.metric, self.task, list(self.metrics))
        if "zero" in c.methods or 0 in c.shots:
            plan.cells.append(Cell("zero", 0, c.seeds[0]))
        for method in c.methods:
            if method == "zero":
                continue
            if method == "raw" and not self.backbone.accepts_images:
                plan.static_skips[method] = "the backbone takes no images"
                continue
            if method in VECTOR_METHODS:
                plan.cells.append(Cell(method, 0, c.seeds[0]))
                continue
            plan.cells += [Cell(method, k, s) for k in c.shots if k > 0 for s in seeds]
        return plan

    # ------------------------------------------------------------------ running
    def run(self) -> dict:
        """Answer every cell (resuming what the run folder holds) and write the reports; one writer
        per run folder (a second is refused while the first runs)."""
        procs = self.procs
        with FolderLock(self.folder_path, "run folder") if procs.main else contextlib.nullcontext():
            if procs.main:  # the main process holds the lock for all, and opens the folder first
                self.folder = RunFolder(self.folder_path, self.run_config, 0, procs.world)
            procs.wait()
            if not procs.main:
                self.folder = RunFolder(self.folder_path, self.run_config, procs.rank, procs.world)
            return self._run()

    def _run(self) -> dict:
        from .report import results_document, write_reports

        started = time.perf_counter()
        procs = self.procs
        if self.needs_bank:
            self.bank_info = prepare_bank(self.fewshot, self.bank_folder, self.pool, self.config.select,
                                          self.config.batch_size, self.progress and procs.main)
            self._check_pool_size()
            if procs.main:  # the index file is written once, then read by the others
                self._warm_up()
            procs.wait()
            if not procs.main:
                self._warm_up()
        plan = self.plan()
        self.memory = PeakMemory(self.backbone.device)
        done = self.folder.done()
        skipped = {(k[0], k[1]) for k, s in done.items() if s.get("skipped")}
        for method in dict.fromkeys(cell.method for cell in plan.cells):
            cells = [cell for cell in plan.cells if cell.method == method]
            bar = tqdm(total=len(cells) * len(self.records), desc=f"{method:5s}", unit="query",
                       disable=not self.progress or not procs.main)
            for cell in cells:
                todo = [(i, r) for i, r in enumerate(self.records) if (method, cell.shots, cell.seed, str(r.id))
                        not in done]
                bar.update(len(self.records) - len(todo))
                if (method, cell.shots) in skipped:
                    bar.update(len(todo))
                    continue
                for n, b in enumerate(range(0, len(todo), self.config.batch_size)):
                    chunk = todo[b:b + self.config.batch_size]
                    if n % procs.world != procs.rank:  # another process's batch
                        bar.update(len(chunk))
                        continue
                    samples = self._batch(cell, chunk)
                    self.folder.append(samples)
                    done.update((sample_key(s), s) for s in samples)
                    bar.update(len(chunk))
                    if self.on_batch is not None:
                        self.on_batch(cell, samples)
                    if samples[0].get("skipped"):
                        logger.info("%s at %d shots skipped: %s", method, cell.shots, samples[0]["skipped"])
                        skipped.add((method, cell.shots))
                        bar.update(len(todo) - b - len(chunk))
                        break
            bar.close()
        procs.wait()
        if procs.main:
            self.folder.merge([(c.method, c.shots, c.seed, str(r.id)) for c in plan.cells for r in self.records])
        document = results_document(plan, self.folder.samples(), self._context(time.perf_counter() - started))
        if procs.main:
            document["files"] = write_reports(self.folder, document)
        procs.wait()
        return document

    def _context(self, seconds: float) -> dict:
        import aim
        import transformers

        versions = {"aim": aim.__version__, "torch": torch.__version__, "transformers": transformers.__version__}
        device = str(self.backbone.device)
        if self.backbone.device.type == "cuda" and torch.cuda.is_available():
            device += f" ({torch.cuda.get_device_name(self.backbone.device)})"
        return {"run_id": self.run_id, "folder": os.path.abspath(self.folder.path), "configuration": self.run_config,
                "versions": versions, "backbone": self.backbone.fingerprint(),
                "fuser": self.run_config["fuser"], "device": device, "context_length": self.backbone.context_length,
                "memory": {"kind": self.memory.kind, "description": self.memory.description},
                "bank": self.bank_info, "seconds": seconds}

    def _check_pool_size(self) -> None:
        most = max(self.config.shots)
        available = len(self.fewshot.bank) - (1 if self.exclude_self else 0)
        if most > available:
            raise AimError(f"{most} shots need {most} demonstrations per query but the bank offers {available}"
                           f"{' (the query itself excluded)' if self.exclude_self else ''}: lower --shots or "
                           "give a larger --pool")

    def _warm_up(self) -> None:
        """Build the selection index and load the text embedder before anything is timed."""
        first = next((r for r in self.records if not is_episode(r)), None)
        if first is not None:
            image = load_image(first.image) if self.backbone.accepts_images else None
            self.fewshot.demo_ids([image], [first.question], 1, self.config.select, 0)

    def _batch(self, cell: Cell, chunk: list) -> list[dict]:
        """Answer one batch of (query number, record) in one cell -> its samples."""
        records = [r for _, r in chunk]
        images = [load_image(r.image) if self.backbone.accepts_images else None for r in records]
        questions = [r.question for r in records]
        self.memory.start()
        t0 = time.perf_counter()
        ids, demos, fused = self._demonstrations(cell, chunk, images, questions)
        t1 = time.perf_counter()
        method = cell.method if cell.shots else "zero"
        batch = assemble(self.backbone, method, images, questions, demos=demos, fused=fused)
        lengths = batch.lengths
        context = self.backbone.context_length
        base = [{"method": cell.method, "shots": cell.shots, "seed": cell.seed, "id": str(r.id), "demo_ids": d}
                for r, d in zip(records, ids)]
        likelihood = self.config.scoring == "likelihood"
        longest = max(len(self.backbone.tokenizer(self.backbone.continuation_text(c), add_special_tokens=False)
                          .input_ids) for r in records for c in classes_of(r)) if likelihood else 0
        new_tokens = longest if likelihood else self.config.max_new_tokens
        if context is not None and max(lengths) + new_tokens > context:
            reason = (f"prompt {max(lengths)} tokens + {new_tokens} new > context {context}")
            return [dict(b, skipped=reason, prompt_tokens=n) for b, n in zip(base, lengths)]
        vectors = self.vectors.get(cell.method)
        with vectors.attached(self.backbone) if vectors is not None else contextlib.nullcontext():
            predictions, logprobs, generated = self._answers(batch, records, likelihood)
        t2 = time.perf_counter()
        memory = self.memory.read()
        out = []
        for b, r, text, lp, n, new in zip(base, records, predictions, logprobs, lengths, generated):
            scores = sample_scores(self.task, text, r, lp)
            sample = dict(b, prediction=text, answers=list(r.answers), **scores, prompt_tokens=n, new_tokens=new,
                          latency_s=(t2 - t1) / len(chunk), retrieval_s=(t1 - t0) / len(chunk),
                          peak_memory_bytes=memory)
            if self.metric in scores:
                sample["score"] = scores[self.metric]
            if lp is not None:
                sample["class_logprobs"] = dict(zip(classes_of(r), lp))
            if r.extra.get("answer_type") is not None:
                sample["answer_type"] = str(r.extra["answer_type"])
            out.append(sample)
        return out

    def _answers(self, batch, records: list, likelihood: bool) -> tuple:
        """(predictions, class log-probabilities or None, new tokens) of one assembled batch."""
        if likelihood:
            ranked = self.backbone.rank_classes(batch, [classes_of(r) for r in records])
            logprobs = [[lik.logprob for lik in row] for row in ranked]
            predictions = [classes_of(r)[max(range(len(lp)), key=lp.__getitem__)] for r, lp in zip(records, logprobs)]
            generated = [0] * len(records)
        else:
            gens = self.backbone.generate(batch, max_new_tokens=self.config.max_new_tokens,
                                          num_beams=self.config.num_beams, length_penalty=self.config.length_penalty)
            logprobs = [None] * len(records)
            predictions, generated = [g.text for g in gens], [g.new_tokens for g in gens]
        return predictions, logprobs, generated

    def _demonstrations(self, cell: Cell, chunk: list, images: list, questions: list):
        """Per query: demo ids (prompt order), Demos (raw, text) and fused tokens (fused)."""
        n = len(chunk)
        ids: list[list[str]] = [[] for _ in range(n)]
        if cell.method == "zero" or cell.shots == 0:
            return ids, None, None
        raw, fused_method = cell.method == "raw", cell.method == "fused"
        demos: list[list[Demo]] = [[] for _ in range(n)]
        fused: list[list[torch.Tensor]] = [[] for _ in range(n)]
        from_bank = [i for i, (_, r) in enumerate(chunk) if not is_episode(r)]
        if from_bank:
            chosen = self.fewshot.demo_ids([images[i] for i in from_bank], [questions[i] for i in from_bank],
                                         cell.shots, self.config.select, cell.seed,
                                         exclude=[chunk[i][1].id for i in from_bank] if self.exclude_self else None,
                                         query_numbers=[chunk[i][0] for i in from_bank])
            bank_demos, bank_fused = self.fewshot.prompt_demos(chosen, cell.method)
            for j, (i, row) in enumerate(zip(from_bank, chosen)):
                ids[i] = row
                if fused_method:
                    fused[i] = bank_fused[j]
                else:
                    demos[i] = bank_demos[j]
        episodes = [i for i in range(n) if i not in set(from_bank)]
        for i in episodes:
            own = episode_demos(chunk[i][1], cell.shots, cell.seed)
            ids[i] = [str(d.id) for d in own]
            demos[i] = [Demo(load_image(d.image) if raw or fused_method else None, d.question, d.answer)
                        for d in own]
        if fused_method and episodes:
            flat = [d for i in episodes for d in demos[i]]
            tokens = []
            for s in range(0, len(flat), self.config.batch_size):
                tokens += self.fuser.fuse_demos(self.backbone, flat[s:s + self.config.batch_size])
            for i in episodes:
                fused[i], tokens = tokens[:cell.shots], tokens[cell.shots:]
        return ids, (None if fused_method else demos), (fused if fused_method else None)


def icl_eval(backbone: Backbone, records: Sequence[Record], config: IclEvalConfig, output: str, **options) -> dict:
    """Run an evaluation (see ``IclEval`` for the options) and return its results document."""
    return IclEval(backbone, records, config, output, **options).run()
