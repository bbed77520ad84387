"""The ``aim`` command: one click group (``python cli.py`` from a checkout is the same)."""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

import click

from .backbones.pocket.config import BackboneTrainConfig, ConnectorTrainConfig
from .errors import AimError
from .fusion.config import TARGET_EMBEDDINGS, TRAINED_FUSER, FuserTrainConfig
from .vectors.config import VECTOR_METHODS, VectorConfig, VectorTrainConfig

#: libraries whose warnings and progress bars are shown with -v only (a user sees aim's own bars,
#: warnings and the table otherwise)
QUIET_UNLESS_VERBOSE = ("transformers", "accelerate", "peft", "bitsandbytes", "kernels", "datasets",
                        "huggingface_hub", "py.warnings")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.captureWarnings(True)  # Python warnings (FutureWarning ...) go through logging as py.warnings
    if verbose:
        return
    for name in QUIET_UNLESS_VERBOSE:
        logging.getLogger(name).setLevel(logging.ERROR)
    # read by transformers and huggingface_hub when they are imported (after this): no weight-loading
    # bars, warnings only when they are errors
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported already (a test, or a caller's own code)
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress (INFO) and the libraries' warnings to stderr.")
@click.option("--allow-outside-paths", is_flag=True,
              help="Let a dataset's image paths be absolute or leave its folder (refused by default).")
def cli(verbose: bool, allow_outside_paths: bool) -> None:
    """aim: many-shot multimodal in-context learning for frozen MLLMs (fused demonstrations)."""
    _setup_logging(verbose)
    if allow_outside_paths:
        os.environ["AIM_ALLOW_OUTSIDE_PATHS"] = "1"


def _backbone_options(f):
    f = click.option("--backbone", default="pocket", show_default=True,
                     help="Short name (pocket), model folder, hub id, or FAMILY:PATH (e.g. llava:/models/llava-1.5-7b).")(f)
    f = click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")(f)
    f = click.option("--dtype", default="float32", show_default=True,
                     type=click.Choice(["float32", "float16", "bfloat16"]))(f)
    f = click.option("--load-in-4bit", is_flag=True, help="4-bit weights through bitsandbytes.")(f)
    f = click.option("--load-in-8bit", is_flag=True, help="8-bit weights through bitsandbytes.")(f)
    f = click.option("--trust-remote-code", is_flag=True, help="Allow a hub model's own code (off by default).")(f)
    f = click.option("--device-map", default=None,
                     help="Split a model too large for one device with accelerate: auto, balanced, sequential.")(f)
    f = click.option("--max-memory", default=None,
                     help="With --device-map: the most each device may hold, e.g. 0=20GiB,1=20GiB,cpu=64GiB.")(f)
    f = click.option("--offload-folder", default=None,
                     help="With --device-map: where layers that fit nowhere else are kept (on disk).")(f)
    return f


def parse_max_memory(text: Optional[str]) -> Optional[dict]:
    """``"0=20GiB,cpu=64GiB"`` -> {0: "20GiB", "cpu": "64GiB"} (accelerate's max_memory)."""
    if not text:
        return None
    out: dict = {}
    for item in text.split(","):
        device, eq, size = item.strip().partition("=")
        if not eq or not device or not size:
            raise AimError(f"--max-memory {text!r}: write DEVICE=SIZE pairs, e.g. 0=20GiB,1=20GiB,cpu=64GiB")
        out[int(device) if device.isdigit() else device] = size
    return out


def _load_backbone(opts: dict):
    """The backbone the options name; under ``accelerate launch``, ``--device cuda`` is this process's GPU."""
    from .backbones import load_backbone
    from .processes import launched, processes

    device = opts.pop("device")
    if launched():
        device = processes().device(device)
    big = {"device_map": opts.pop("device_map", None), "max_memory": parse_max_memory(opts.pop("max_memory", None)),
           "offload_folder": opts.pop("offload_folder", None)}
    if not big["device_map"] and (big["max_memory"] or big["offload_folder"]):
        raise AimError("--max-memory and --offload-folder go with --device-map (e.g. --device-map auto)")
    return load_backbone(opts.pop("backbone"), dtype=opts.pop("dtype"), device=device,
                         **{k: v for k, v in big.items() if v},
                         load_in_4bit=opts.pop("load_in_4bit"), load_in_8bit=opts.pop("load_in_8bit"),
                         trust_remote_code=opts.pop("trust_remote_code"))


@cli.command()
@_backbone_options
@click.option("--dataset", default="easy-vqa:test", show_default=True,
              help="easy-vqa:test, easy-vqa:train, fashion-mnist:test, fashion-mnist:train, or a dataset file or "
                   "folder (.jsonl, VQA/VizWiz/TextVQA JSON, datasets folder, parquet; see docs/datasets.md).")
@click.option("--limit", default=8, show_default=True, help="How many questions (in the dataset's order).")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--no-image", is_flag=True, help="Ask the questions without their images (a baseline).")
def answer(dataset: str, limit: int, batch_size: int, no_image: bool, **opts) -> None:
    """Answer questions zero-shot and print a table of predictions with their VQA accuracy."""
    import time

    from .eval.answer import answer_records, score

    records = _records(dataset, limit)
    start = time.perf_counter()
    backbone = _load_backbone(opts)
    loaded = time.perf_counter() - start
    gens = answer_records(backbone, records, batch_size, use_image=not no_image)
    from .eval.metrics import vqa_accuracy

    click.echo(f"backbone {backbone.model_id} ({backbone.family}), loaded in {loaded:.1f} s; {dataset}, "
               f"{'no image' if no_image else 'zero-shot'}\n")
    click.echo("| id | question | prediction | answer | VQA acc | prompt tokens |")
    click.echo("|---|---|---|---|---|---|")
    for r, g in zip(records, gens):
        click.echo(f"| {r.id} | {r.question} | {g.text} | {r.answer} | {vqa_accuracy(g.text, r.answers):.2f} "
                   f"| {g.prompt_tokens} |")
    s = score([g.text for g in gens], records)
    click.echo(f"\nVQA accuracy {s['vqa_accuracy']:.3f}, exact match {s['exact_match']:.3f}, "
               f"answer contained {s['contains']:.3f} over {s['n']} questions")


@cli.command()
@_backbone_options
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("question")
@click.option("--max-new-tokens", default=24, show_default=True)
def ask(image: str, question: str, max_new_tokens: int, **opts) -> None:
    """Answer QUESTION about IMAGE (a file) zero-shot."""
    from .images import load_image

    picture = load_image(image)  # a bad file fails before the model loads
    backbone = _load_backbone(opts)
    click.echo(backbone.answer([picture], [question], max_new_tokens=max_new_tokens)[0].text)


@cli.command("compress-demos")
@_backbone_options
@click.option("--fuser", default=None, help="Fuser folder (from `aim train fuser`), or 'identity' for no fusion.")
@click.option("--dataset", required=True,
              help="Demonstration pool: a built-in (easy-vqa:train, fashion-mnist:train, ...) or a dataset file or "
                   "folder, format told from the path or named as FORMAT:PATH[:SPLIT]: a .jsonl file, the VQA "
                   "questions+annotations JSON pair (a folder, or vqa:questions=Q,annotations=A,images=DIR), a "
                   "VizWiz or TextVQA JSON, a datasets folder (save_to_disk) or parquet (see docs/datasets.md).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bank folder (created, or resumed).")
@click.option("--limit", type=int, default=None, help="Only the first N records.")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--shard-size", default=256, show_default=True, help="Demonstrations per committed shard.")
@click.option("--keys", default="image", show_default=True, help="Retrieval keys to store: image, text or image,text.")
@click.option("--overwrite", is_flag=True,
              help="Build the bank in a folder that holds other files (they are kept); refused without it.")
@click.option("--storage", default="float32", show_default=True,
              type=click.Choice(["float32", "float16", "bfloat16", "int8"]),
              help="Number format of the fused tokens on disk: float16/bfloat16 halve the bank, int8 (one scale per "
                   "token) quarters it (docs/formats.md has bytes per demonstration and the accuracy of each).")
@click.option("--fit-on-pool", type=int, default=None, metavar="N",
              help="Refit the fuser's closed-form start on N demonstrations, half of them from this pool (images and "
                   "texts; no labels needed), before fusing it: the pool's image domain reaches the fused tokens. The "
                   "refitted fuser is saved in OUT/fuser; use it with the bank (--fuser OUT/fuser).")
def compress_demos_cmd(fuser, dataset, out, limit, batch_size, shard_size, keys, overwrite, storage, fit_on_pool,
                       **opts) -> None:
    """Turn a pool of demonstrations into a demo bank on disk (resumable: run it again after an interrupt).

    Several processes (`accelerate launch -m aim.cli compress-demos ...`) fuse disjoint shards of the
    pool; the main process merges them into one bank, the same as one process would build."""
    from .compress import compress_demos
    from .fusion import load_fuser

    records = _records(dataset, limit)
    _writable(out, "--out")
    backbone = _load_backbone(opts)
    chosen = load_fuser(fuser, backbone)
    if fit_on_pool:
        chosen = _pool_fitted(backbone, chosen, records, out, fit_on_pool)
    summary = compress_demos(backbone, chosen, records, out, batch_size, shard_size,
                             [k.strip() for k in keys.split(",") if k.strip()], overwrite=overwrite, storage=storage)
    from .processes import processes

    if not processes().main:
        return
    raw = summary["raw_tokens_per_demo"]
    click.echo("\n| bank | storage | demos (added) | fused tokens/demo | raw tokens/demo | size on disk | time | demos/s |")
    click.echo("|---|---|---|---|---|---|---|---|")
    click.echo(f"| {out} | {summary['storage']} | {summary['demos']} ({summary['added']}) | "
               f"{summary['fused_tokens_per_demo']:.1f} | "
               f"{raw if raw is None else f'{raw:.1f}'} | {summary['bank_bytes'] / 2**20:.2f} MiB | "
               f"{summary['seconds']:.1f} s | {summary['demos_per_second'] or 0:.1f} |")


def _pool_fitted(backbone, fuser, records, out: str, demos: int):
    """The fuser refitted on the pool (aim/fusion/pool_fit.py), saved in OUT/fuser; a rerun of an
    interrupted build finds it there and fuses with the same one."""
    from .fusion import WEIGHTS_NAME, Fuser
    from .fusion.pool_fit import fit_on_pool, saved_fit

    folder = saved_fit(out)
    if os.path.isfile(os.path.join(folder, WEIGHTS_NAME)):
        return Fuser.from_pretrained(folder, backbone=backbone).to(backbone.device)
    refit = fit_on_pool(backbone, fuser, records, demos)
    refit.save_pretrained(folder)
    click.echo(f"fuser fitted on the pool: {folder} (use it with this bank: --fuser {folder})")
    return refit


def _fuser(spec, backbone):
    from .fusion import load_fuser

    return load_fuser(spec, backbone)


def _parsed(parser: str, *args):
    """A click callback that parses a comma-separated value with ``aim.eval.config.<parser>``
    (imported when the option is parsed, so ``--help`` stays fast)."""
    def callback(ctx, param, value):
        from .eval import config

        try:
            return getattr(config, parser)(value, *args)
        except AimError as err:
            raise click.BadParameter(str(err)) from None
    return callback


@cli.command("icl-eval")
@_backbone_options
@click.option("--fuser", default=None, help="Fuser folder (from `aim train fuser`), or 'identity' for no fusion.")
@click.option("--dataset", required=True, help="The questions: a dataset spec (easy-vqa:test, fashion-mnist:test, ...).")
@click.option("--pool", default=None,
              help="Demonstration pool spec, fused into the bank when it is missing (e.g. easy-vqa:train).")
@click.option("--pool-limit", type=int, default=None, help="Only the first N records of the pool.")
@click.option("--bank", default=None, type=click.Path(file_okay=False),
              help="Demo bank folder: reused when it exists, else built from --pool. Default: OUTPUT/RUN_ID/bank.")
@click.option("--methods", default="zero,raw,text,fused", show_default=True,
              callback=_parsed("parse_methods"),
              help="Comma-separated: zero (no demonstrations), raw (images + texts), text (texts only), "
                   "fused (fused tokens from the bank), live / mimic / mtv (the query alone with LIVE-, MimIC- or "
                   "MTV-style vectors attached, from --vectors).")
@click.option("--vectors", "vector_folders", multiple=True, type=click.Path(file_okay=False),
              help="A vector folder (from `aim train vectors`) for the vector method it holds (repeat for several).")
@click.option("--shots", default="0,4,8,16", show_default=True,
              callback=_parsed("parse_ints", "--shots"),
              help="Comma-separated demonstration counts; 0 is the zero-shot prompt for every method.")
@click.option("--select", default="random", show_default=True, type=click.Choice(["random", "image", "text", "hybrid"]),
              help="How demonstrations are chosen: seeded random, or most similar by image, question text or both.")
@click.option("--seeds", default="0,1,2", show_default=True,
              callback=_parsed("parse_ints", "--seeds"),
              help="Seeds of random selection (similarity selection runs the first only).")
@click.option("--index", "index_kind", default="auto", show_default=True,
              type=click.Choice(["auto", "flat", "ivf", "ivfpq", "hnsw"]),
              help="FAISS index over the bank's keys: auto (exact below 50,000 keys, IVF above), or ivfpq for pools "
                   "too large for memory (64-byte codes; its 64 x k candidates are re-ranked by the bank's exact "
                   "keys, read from disk row by row: the exact top 16 at 1M keys, docs/scaling.md).")
@click.option("--limit", type=int, default=None, help="Only the first N questions of the dataset.")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--max-new-tokens", default=10, show_default=True, help="Answer budget in tokens.")
@click.option("--num-beams", default=1, show_default=True, type=int,
              help="1: greedy decoding; more: beam search through transformers' generate (open_flamingo's VQA and "
                   "captioning use 3).")
@click.option("--length-penalty", default=1.0, show_default=True, type=float,
              help="Beam search's length penalty (transformers' meaning).")
@click.option("--task", default="auto", show_default=True,
              type=click.Choice(["auto", "vqa", "caption", "classification"]),
              help="auto: what the records say (caption readers mark captions; class lists make classification), "
                   "else vqa.")
@click.option("--scoring", default="generate", show_default=True, type=click.Choice(["generate", "likelihood"]),
              help="generate: score the generated answer; likelihood: rank classification over each record's "
                   "class list (open_flamingo's ImageNet / Hateful Memes method).")
@click.option("--metric", default="auto", show_default=True,
              type=click.Choice(["auto", "vqa_accuracy", "exact_match", "cider", "bleu4", "rouge_l", "roc_auc"]),
              help="auto: the task's own: VQA accuracy (open_flamingo's current scorer), CIDEr (pycocoevalcap; "
                   "needs Java), ROC-AUC for binary classification, else exact match.")
@click.option("--output", default="runs/icl-eval", show_default=True, type=click.Path(file_okay=False),
              help="Folder of runs; results go to OUTPUT/RUN_ID/.")
@click.option("--run-id", default=None,
              help="Run folder name (default: dataset, backbone and a digest of the options). Rerunning with the "
                   "same options resumes it.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def icl_eval_cmd(fuser, dataset, pool, pool_limit, bank, methods, vector_folders, shots, select, seeds, index_kind, limit,
                 batch_size, max_new_tokens, num_beams, length_penalty, task, scoring, metric, output, run_id, quiet,
                 **opts) -> None:
    """Few-shot evaluation: every method at every shot count (and seed), side by side.

    Writes OUTPUT/RUN_ID/results.json, samples.jsonl (every prediction), results.md (the table) and
    results.png (accuracy and prompt tokens against shots); prints the table. Resumable: run the same
    command again after an interrupt. Several processes (`accelerate launch -m aim.cli icl-eval ...`)
    answer disjoint batches and write the files one process would."""
    from .eval.config import IclEvalConfig
    from .eval.runner import icl_eval

    config = IclEvalConfig(dataset=dataset, methods=methods, shots=shots, select=select, seeds=seeds, limit=limit,
                           pool=pool, pool_limit=pool_limit, batch_size=batch_size, max_new_tokens=max_new_tokens,
                           metric=metric, task=task, scoring=scoring, num_beams=num_beams,
                           length_penalty=length_penalty)
    records = _records(dataset, limit)
    pool_records = _records(pool, pool_limit, "--pool") if pool else None
    _writable(output, "--output")
    backbone = _load_backbone(opts)
    from .eval.config import shows_demos

    needs_fuser = any(shows_demos(m) for m in methods) and any(k > 0 for k in shots)
    vectors = {}
    if vector_folders:
        from .vectors import load_vectors

        for folder in vector_folders:
            module = load_vectors(folder, backbone)
            if module.config.method in vectors:
                raise AimError(f"--vectors {vectors[module.config.method].source} and {folder} both hold "
                               f"{module.config.method} vectors: give one folder per method")
            vectors[module.config.method] = module
    doc = icl_eval(backbone, records, config, output, run_id=run_id,
                   fuser=_fuser(fuser, backbone) if needs_fuser else None, pool=pool_records, bank=bank,
                   progress=not quiet, index_kind=index_kind, vectors=vectors)
    from .eval.report import markdown_table
    from .processes import processes

    if not processes().main:  # the main process prints the table once
        return
    click.echo("\n" + markdown_table(doc))
    if doc.get("note"):
        click.echo(f"note: {doc['note']}")
    click.echo(f"backbone {backbone.model_id}; {doc['samples']} samples in {doc['seconds']:.1f} s; "
               f"results: {doc['files']['results']}; plot: {doc['files']['plot']}")


@cli.command()
def info() -> None:
    """Versions, the known backbones and where caches live."""
    import torch
    import transformers

    from .backbones.registry import available
    from .cache import cache_dir

    click.echo(f"aim {__import__('aim').__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
    click.echo(f"cuda available: {torch.cuda.is_available()}; cache: {cache_dir()}")
    click.echo("backbones:")
    for name, path in available().items():
        click.echo(f"  {name:12s} {path}")


@cli.group()
def train() -> None:
    """Train the small trainable parts: the pocket connector (stage 1), the pocket backbone (stage 2), fusers,
    and the vector methods that stand in for demonstrations (LIVE-style)."""


def _option(config, name: str, help: str = "", **kwargs):
    """``--name`` with its default read from the trainer's config dataclass (one source of defaults)."""
    spec = config.__dataclass_fields__[name]
    for cls in config.__mro__:  # a subclass that sets another default keeps its parent's help
        help = help or getattr(cls, "__dataclass_fields__", {}).get(name, spec).metadata.get("help", "")
    help = help[:1].upper() + help[1:]
    flag = "--" + name.replace("_", "-")
    if spec.default is None:
        return click.option(flag, default=None, help=help, **kwargs)
    return click.option(flag, default=spec.default, show_default=True, help=help, **kwargs)


def _run_options(config):
    """The options every resumable training run has (RunConfig, aim/training/loop.py)."""
    def add(f):
        for name, extra in (("mixed_precision", {"type": click.Choice(["auto", "no", "bf16", "fp16"])}),
                            ("eval_every", {}), ("save_every", {}), ("seed", {}), ("warmup", {}),
                            ("grad_accum", {}), ("batch_size", {}), ("stop_after", {"type": int}), ("steps", {}),
                            ("out", {})):
            f = _option(config, name, **extra)(f)
        return f
    return add


@train.command("connector")
@_run_options(ConnectorTrainConfig)
@_option(ConnectorTrainConfig, "lr")
@_option(ConnectorTrainConfig, "image_size", help="Vision input size (128 px: 16 image tokens; 256 px: 64).")
@_option(ConnectorTrainConfig, "init")
@_option(ConnectorTrainConfig, "easy_vqa_images", help="easy-VQA train scenes to caption.")
@_option(ConnectorTrainConfig, "fashion_per_class", help="Fashion-MNIST train images per class.")
def train_connector_cmd(**opts) -> None:
    """LLaVA stage-1 training of the pocket connector on training-split captions.

    Resumes from OUT/state/ when it exists; writes OUT/connector_config.json,
    OUT/connector.safetensors, OUT/log.jsonl and OUT/loss.png."""
    from .backbones.pocket.train_connector import train_connector

    out = train_connector(ConnectorTrainConfig(**opts))
    click.echo(f"connector checkpoint: {out}")


@train.command("backbone")
@_run_options(BackboneTrainConfig)
@click.option("--init", default=None, help="Stage-1 connector folder to start from (default: the shipped one).")
@_option(BackboneTrainConfig, "init_adapter")
@_option(BackboneTrainConfig, "image_size")
@_option(BackboneTrainConfig, "lr_connector")
@_option(BackboneTrainConfig, "lr_lora")
@_option(BackboneTrainConfig, "lora_r")
@_option(BackboneTrainConfig, "lora_alpha")
@_option(BackboneTrainConfig, "max_shots", help="Most demonstrations in a training sequence.")
@_option(BackboneTrainConfig, "caption_fraction", help="Share of caption examples.")
@_option(BackboneTrainConfig, "vqa_fraction", help="Share of easy-VQA question runs.")
@_option(BackboneTrainConfig, "names_fraction", help="Share of class-name runs (real names, random demonstrations).")
@_option(BackboneTrainConfig, "image_sets")
@_option(BackboneTrainConfig, "vocabularies")
@_option(BackboneTrainConfig, "easy_vqa_images", help="easy-VQA train scenes.")
def train_backbone_cmd(**opts) -> None:
    """Stage 2 of the pocket backbone: varied interleaved episodes (label binding over several image
    sets, vocabularies, question wordings and draws; class names; easy-VQA question runs; caption runs;
    training splits only) train the connector and a LoRA, so the backbone learns in context. Runs through accelerate (`accelerate launch -m aim.cli train
    backbone ...` for several devices). Resumes from OUT/state/; writes a pocket checkpoint
    (connector + peft adapter) usable as `--backbone pocket:OUT`."""
    from .backbones.pocket.train_icl import train_backbone

    if opts["init"] is None:
        opts.pop("init")
    out = train_backbone(BackboneTrainConfig(**opts))
    click.echo(f"pocket checkpoint: {out}")


@train.command("fuser")
@_backbone_options
@_run_options(FuserTrainConfig)
@click.option("--data", default=None,
              help="Training sequences. Default: the backbone's own (the pocket's training-split episodes; other "
                   "backbones bring none). Or interleaved documents (a .jsonl of OBELICS-style {images, texts} rows, "
                   "or documents:FOLDER|PARQUET), or any dataset spec / file / folder, whose records are grouped "
                   "at random into sequences.")
@click.option("--limit", type=int, default=None, help="Read only the first N records of --data.")
@_option(FuserTrainConfig, "lr")
@_option(FuserTrainConfig, "objective", type=click.Choice(["lm", "distill", "both"]),
         help="lm: answer cross-entropy; distill: KL from the raw multimodal prompt; both: the sum.")
@click.option("--kind", default=TRAINED_FUSER.kind, show_default=True, type=click.Choice(["linear", "mlp"]))
@click.option("--residual/--no-residual", default=TRAINED_FUSER.residual, show_default=True,
              help="Fused = the demo's text embedding + a projection starting at zero (--no-residual: the "
                   "projection alone, as in the AIM paper).")
@click.option("--layer", default=TRAINED_FUSER.layer, show_default=True,
              help="Which layer's hidden states to read (-1: the last).")
@click.option("--normalize", default=TRAINED_FUSER.normalize, show_default=True, type=click.Choice(["rms", "none"]),
              help="rms: each state RMS-normalised to the mean norm of the backbone's input embeddings.")
@click.option("--residual-tokens", type=int, default=TRAINED_FUSER.residual_tokens, show_default=True,
              help="Residual fusers: add the projection to the first N fused tokens only (0: to every token).")
@click.option("--residual-mode", default=TRAINED_FUSER.residual_mode, show_default=True,
              type=click.Choice(["add", "prepend"]),
              help="add: the projection goes onto the first N text embeddings (one fused token per text token); "
                   "prepend: it becomes N fused tokens of their own ahead of the text (N more per demonstration).")
@click.option("--align", type=int, default=None,
              help="Start a residual linear fuser by least squares toward each demonstration's own image "
                   "embeddings pooled to --residual-tokens, fitted on N demonstrations (0: start at zero; "
                   "default: 512 where the fuser is residual and linear, else 0).")
@click.option("--align-data", default=None,
              help="Dataset spec (as --data) whose demonstrations make up half of the aligned start's fit: the "
                   "demo pool of an image domain the training data lacks. Only images and texts are used.")
@_option(FuserTrainConfig, "ridge",
         help="Ridge penalty of the aligned start's least squares (times the number of rows).")
@click.option("--pool-tokens", type=int, default=TRAINED_FUSER.pool_tokens,
              help="Pool each demonstration to this many fused tokens.")
@_option(FuserTrainConfig, "max_shots", help="Most demonstrations in a training sequence.")
def train_fuser_cmd(kind, residual, layer, normalize, residual_tokens, residual_mode, pool_tokens, **opts) -> None:
    """Train a fuser for a frozen backbone (the AIM setting: fused earlier demonstrations, the query's
    image and question, loss on its answer). Resumes from OUT/state/; writes OUT/fusion_config.json,
    OUT/fusion_model.safetensors, OUT/log.jsonl and OUT/loss.png."""
    import dataclasses

    from .fusion.train import train_fuser

    backbone_opts = {k: opts.pop(k) for k in BACKBONE_OPTIONS}
    fusion = dataclasses.replace(TRAINED_FUSER, kind=kind, residual=residual, layer=layer, normalize=normalize,
                                 target_norm=TARGET_EMBEDDINGS if normalize == "rms" else None,
                                 residual_tokens=(residual_tokens or None) if residual else None,
                                 residual_mode=residual_mode, pool_tokens=pool_tokens)
    cfg = FuserTrainConfig(fusion=fusion, **opts)
    _writable(cfg.out, "--out")
    click.echo(f"fuser checkpoint: {train_fuser(_load_backbone(backbone_opts), cfg)}")


BACKBONE_OPTIONS = ("backbone", "device", "dtype", "load_in_4bit", "load_in_8bit", "trust_remote_code", "device_map",
                    "max_memory", "offload_folder")


@train.command("vectors")
@_backbone_options
@_run_options(VectorTrainConfig)
@click.option("--method", default=VectorConfig.method, show_default=True, type=click.Choice(VECTOR_METHODS),
              help="live: one shift vector and one weight per decoder layer, trained (LIVE-style, NeurIPS 2024); "
                   "mimic: a shift per attention head with a query-dependent magnitude, trained to align each layer "
                   "with the raw prompt's (MimIC-style, CVPR 2025); mtv: mean head outputs of many-shot prompts "
                   "patched into heads chosen by REINFORCE (MTV-style, NeurIPS 2024).")
@click.option("--data", default=None,
              help="The task's training data: a dataset spec / file / folder whose records are grouped at random "
                   "into --shots demonstrations and a query. Default: the backbone's own training sequences.")
@click.option("--limit", type=int, default=None, help="Read only the first N records of --data.")
@_option(VectorTrainConfig, "shots")
@_option(VectorTrainConfig, "lr", type=float)
@_option(VectorTrainConfig, "alpha_lr")
@_option(VectorTrainConfig, "kl_weight")
@_option(VectorTrainConfig, "align_weight")
@_option(VectorTrainConfig, "ce_weight")
@_option(VectorTrainConfig, "temperature")
@_option(VectorConfig, "alpha_init")
@_option(VectorConfig, "init_std")
@_option(VectorTrainConfig, "mean_prompts")
@_option(VectorTrainConfig, "samples")
@_option(VectorTrainConfig, "candidates")
def train_vectors_cmd(method, alpha_init, init_std, **opts) -> None:
    """Make vectors that stand in for --shots demonstrations of one task; the backbone then answers
    the query alone with them attached. live: trained, taught by the backbone itself reading the raw
    demonstrations (KL at the answer tokens) and by the answer (cross-entropy). mimic: trained
    to match each layer's output under the raw demonstrations, plus the answer. mtv: the heads' mean
    outputs over --mean-prompts raw prompts, and a REINFORCE search (--steps) for the heads to patch.
    Use them with `aim icl-eval --methods live,mimic,mtv --vectors OUT ...`. Resumes from OUT/state/;
    writes OUT/vector_config.json, OUT/vector_model.safetensors, OUT/log.jsonl and OUT/loss.png."""
    from .vectors.train import train_vectors

    backbone_opts = {k: opts.pop(k) for k in BACKBONE_OPTIONS}
    cfg = VectorTrainConfig(vector=VectorConfig(method=method, alpha_init=alpha_init, init_std=init_std), **opts)
    _writable(cfg.out, "--out")
    click.echo(f"vector checkpoint: {train_vectors(_load_backbone(backbone_opts), cfg)}")


def main() -> None:
    """The installed ``aim`` command: an ``AimError`` is one line (``error: ...``, exit 2); Ctrl-C says
    what survives (exit 130); anything else is a bug and keeps its traceback."""
    try:
        code = cli.main(standalone_mode=False)
    except AimError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("interrupted: what was committed is kept; compress-demos, icl-eval and train resume where they "
                   "stopped when run again with the same options", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def _records(spec: str, limit, what: str = "--dataset"):
    """The records of a spec, refusing none (a run over nothing is a mistake, not a result)."""
    from .data.spec import load_records

    records = load_records(spec, limit)
    if not records:
        raise AimError(f"{what} {spec} gives no records{f' (with --limit {limit})' if limit is not None else ''}: "
                       "check the file, or the split and the limit")
    return records


def _writable(folder: str, what: str) -> None:
    """Refuse, before any model loads, a folder that cannot be written."""
    parent = folder
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent.rstrip(os.sep)) or "."
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise AimError(f"{what} {folder} cannot be written ({parent} is not a writable folder): choose another")


if __name__ == "__main__":
    main()
