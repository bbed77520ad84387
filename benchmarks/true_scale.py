"""Cost against shots at true scale: random-weight models with the geometry of LLaVA-1.5-7B, Idefics2-8B
(64 and 320 image tokens per image) and Qwen2-VL-7B, raw multimodal ICL against fused demonstrations.

    .venv/bin/python benchmarks/true_scale.py --device cuda        # the GPU check: full size, bf16, < 8 minutes
    .venv/bin/python benchmarks/true_scale.py --device cuda --geometries llava-1.5-7b,idefics2-8b,idefics2-8b-split,qwen2-vl-7b \
        --shots 0,1,2,4,8,16,32,64                                   # the whole sweep on a GPU
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/true_scale.py                      # CPU: scaled-down widths
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/true_scale.py --quick              # smoke version

Speed and memory do not depend on the weights' values, so the models are built from configs with
random weights (nothing is downloaded). The sizes below are those of the published checkpoints'
configs. On CUDA the models are built at full size in bf16. On CPU they are scaled down (``--small-*``
flags: by default 2 LLM layers of width 256, a 2-layer vision tower of width 64, a 1-layer resampler)
while every thing that sets the number of tokens stays real: image resolution, patch size, image
tokens per image, the processor and chat template, and the context length. A 7B model is never
allocated on CPU; its parameter count is taken on the ``meta`` device.

The tokenizer is SmolLM2's (what tests/tiny_models.py gives every family) with each family's special
tokens and real chat template, so image tokens are exact and text tokens are within a few percent of
each real tokenizer's; the embedding tables are then at least 49,216 rows (more than LLaVA's 32,064).

Per geometry: prompt tokens for k shots (raw: k images + texts; fused: one fused token per text token,
and pooled to 4 and to 1 per demonstration, from identity-kind fusers over ``read_demos``), exactly,
through the adapters; the largest k whose prompt and ``--new-tokens`` answer tokens fit the context,
raw and fused; then per query, batch by batch (``--batch-sizes``): assembly (``aim.prompting.assemble``:
processor, vision tower, fused tokens put in place), prefill (one LLM forward with the cache and the
first token), and ``--new-tokens`` forced greedy tokens. Timings are medians over ``--repeats``; the
configurations of one geometry and batch size are timed round-robin (after one warm-up pass), so
background load falls on all of them alike. Peak memory: CUDA ``max_memory_allocated`` above the
weights; CPU the torch profiler's peak of tensor bytes allocated during the query. Configurations past
the context are not run; on CPU neither are prompts over ``--cpu-max-tokens`` (prompt tokens x batch:
longer ones are slow and memory-hungry on two cores). Retrieval and the bank do not depend on the
backbone's geometry beyond the hidden size (benchmarks/cost_vs_shots.py and compress_throughput.py
measure them). Also per geometry: how fast the backbone reads demonstrations (``read_demos`` at batch
16, demonstrations per second: what ``aim compress-demos`` costs per demonstration on this device).

On CUDA the defaults are the GPU check a session lent a GPU runs first: LLaVA-1.5-7B and Qwen2-VL-7B,
shots 0, 8 and 32, batches 1 and 8, 2 repeats; the JSON is rewritten after every geometry and
``--budget-s`` (default 420 s) stops starting new measurements, so the run ends within 8 minutes on
one H100/H200 with what it has. Writes benchmarks/results/true_scale_{cpu,cuda}[_quick].json and a PNG plot.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # tiny_models: the tokenizer and the real chat templates

import aim  # noqa: E402
from aim.backbones.registry import adapter_class  # noqa: E402
from aim.fusion import Fuser, FusionConfig  # noqa: E402
from aim.images import load_image  # noqa: E402
from aim.prompting import assemble  # noqa: E402
from cost_vs_shots import COLORS, default_png, environment, greedy_forced, shots_axis, tensor_peak_bytes  # noqa: E402

logger = logging.getLogger("true_scale")
MB = 1024 * 1024

#: the published configs' sizes (llava-hf/llava-1.5-7b-hf, HuggingFaceM4/idefics2-8b, Qwen/Qwen2-VL-7B-Instruct)
GEOMETRIES = {
    "llava-1.5-7b": {
        "family": "llava", "context": 4096, "image_tokens": "576 per image (CLIP ViT-L/14 at 336 px, CLS dropped)",
        "text": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5),
        "vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=336, patch_size=14, projection_dim=768),
    },
    "idefics2-8b": {
        "family": "idefics2", "context": 32768, "split": False,
        "image_tokens": "64 per image (perceiver resampler, 64 latents; no image splitting)",
        "text": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=32003, max_position_embeddings=32768, rms_norm_eps=1e-5),
        "vision": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                       image_size=980, patch_size=14),
        "perceiver": dict(resampler_n_latents=64, resampler_depth=3, resampler_n_heads=16, resampler_head_dim=96,
                          num_key_value_heads=4),
    },
    "idefics2-8b-split": {
        "family": "idefics2", "context": 32768, "split": True,
        "image_tokens": "320 per image (image splitting: 4 crops + the whole, 64 latents each)",
        "same_as": "idefics2-8b",
    },
    "qwen2-vl-7b": {
        "family": "qwen2_vl", "context": 32768, "pixels": 448,
        "image_tokens": "256 per image at 448x448 (14 px patches merged 2x2; Qwen2-VL's count follows the resolution)",
        "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rms_norm_eps=1e-6),
        "rope_theta": 1e6, "mrope_section": [16, 24, 24],
        "vision": dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, patch_size=14, spatial_merge_size=2,
                       temporal_patch_size=2),
    },
}
METHODS = {"raw": None, "fused": None, "fused-pool4": 4, "fused-pool1": 1}
SHOTS = "0,1,2,4,8,16,32,64"


def geometry(name: str) -> dict:
    g = dict(GEOMETRIES[name])
    if "same_as" in g:
        g = {**GEOMETRIES[g.pop("same_as")], **g}
    return g


# ------------------------------------------------------------------ building
def shrink(g: dict, args) -> dict:
    """The same geometry with narrow, shallow towers; every token-setting size kept."""
    g = json.loads(json.dumps(g))
    t = g["text"]
    heads = args.small_heads
    kv = max(1, heads * t["num_key_value_heads"] // t["num_attention_heads"])
    ratio = t["intermediate_size"] / t["hidden_size"]
    t.update(hidden_size=args.small_hidden, num_hidden_layers=args.small_layers, num_attention_heads=heads,
             num_key_value_heads=kv, intermediate_size=int(round(ratio * args.small_hidden / 8)) * 8)
    v, w = g["vision"], args.small_vision_hidden
    if g["family"] == "qwen2_vl":
        v.update(depth=args.small_vision_layers, embed_dim=w, num_heads=2, mlp_ratio=2)
        head_half = args.small_hidden // heads // 2  # rotary frequencies, split over (time, height, width)
        sec = g["mrope_section"]
        side = round(head_half * sec[1] / sum(sec))
        g["mrope_section"] = [head_half - 2 * side, side, side]
    else:
        v.update(hidden_size=w, intermediate_size=2 * w, num_hidden_layers=args.small_vision_layers,
                 num_attention_heads=2)
    if "perceiver" in g:
        g["perceiver"].update(resampler_depth=1, resampler_n_heads=heads, resampler_head_dim=args.small_hidden // heads,
                              num_key_value_heads=1)
    return g


def build_model(g: dict, tok, vocab: int):
    """The HF model object for a geometry (weights random; built on the current default device/dtype)."""
    import transformers

    t = dict(g["text"], vocab_size=vocab, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
             eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    ids = tok.convert_tokens_to_ids
    if g["family"] == "llava":
        config = transformers.LlavaConfig(
            vision_config=transformers.CLIPVisionConfig(**g["vision"]), text_config=transformers.LlamaConfig(**t),
            image_token_id=ids("<image>"), vision_feature_layer=-2, vision_feature_select_strategy="default",
            image_seq_length=(g["vision"]["image_size"] // g["vision"]["patch_size"]) ** 2)
        return transformers.LlavaForConditionalGeneration(config)
    if g["family"] == "idefics2":
        config = transformers.Idefics2Config(
            vision_config=g["vision"], perceiver_config=dict(hidden_size=t["hidden_size"], **g["perceiver"]),
            text_config=transformers.MistralConfig(sliding_window=None, **t).to_dict(), image_token_id=ids("<image>"))
        return transformers.Idefics2ForConditionalGeneration(config)
    if g["family"] == "qwen2_vl":
        rope = {"rope_type": "default", "rope_theta": g["rope_theta"], "mrope_section": g["mrope_section"]}
        config = transformers.Qwen2VLConfig(
            vision_config=dict(hidden_size=t["hidden_size"], **g["vision"]),
            text_config=dict(rope_parameters=rope, **t),
            image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
        return transformers.Qwen2VLForConditionalGeneration(config)
    raise ValueError(g["family"])


def build_processor(g: dict):
    """Processor with the real image geometry, the SmolLM2 tokenizer and the family's chat template."""
    import tiny_models as tm
    from aim.backbones.hf import image_only_processor

    if g["family"] == "llava":
        from transformers import LlavaProcessor
        from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

        size = g["vision"]["image_size"]
        tok = tm.tokenizer_with(["<image>"], tm.LLAVA_TEMPLATE)
        images = LlavaImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        return LlavaProcessor(images, tok, patch_size=g["vision"]["patch_size"],
                              vision_feature_select_strategy="default", num_additional_image_tokens=1,
                              chat_template=tm.LLAVA_TEMPLATE)
    if g["family"] == "idefics2":
        from transformers import Idefics2Processor
        from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil

        tok = tm.tokenizer_with(tm.IDEFICS_TOKENS, tm.IDEFICS2_TEMPLATE)
        images = Idefics2ImageProcessorPil(size={"shortest_edge": 378, "longest_edge": g["vision"]["image_size"]},
                                           do_image_splitting=g["split"])
        return Idefics2Processor(images, tok, image_seq_len=g["perceiver"]["resampler_n_latents"],
                                 chat_template=tm.IDEFICS2_TEMPLATE)
    if g["family"] == "qwen2_vl":
        from transformers import Qwen2VLProcessor
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        tok = tm.tokenizer_with(tm.QWEN_TOKENS, tm.QWEN2_VL_TEMPLATE)
        pixels = g["pixels"] ** 2  # min = max: every image resized to pixels x pixels
        images = Qwen2VLImageProcessorPil(size={"shortest_edge": pixels, "longest_edge": pixels})
        return image_only_processor(Qwen2VLProcessor)(images, tok, chat_template=tm.QWEN2_VL_TEMPLATE)
    raise ValueError(g["family"])


def parameter_count(g: dict, tok, vocab: int) -> int:
    """Parameters of the model at this geometry, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = build_model(g, tok, vocab)
    return sum(p.numel() for p in model.parameters())


def build_backbone(name: str, g: dict, device: str, dtype: torch.dtype):
    from tiny_models import vocab_size

    processor = build_processor(g)
    tok = processor.tokenizer
    vocab = max(g["text"]["vocab_size"], vocab_size(tok))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(0)
        with torch.device(device):
            model = build_model(g, tok, vocab)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    backbone = adapter_class(g["family"])(model, processor, f"random:{name}", dtype, device)
    return backbone, vocab


# ------------------------------------------------------------------ measuring
class Meter:
    """Timing and peak memory on one device."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def peak_mb(self, fn) -> float:
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            self.sync()
            return (torch.cuda.max_memory_allocated() - base) / MB
        return tensor_peak_bytes(fn) / MB


def fused_variants(backbone, demos, batch: int = 8) -> dict:
    """Fused tokens per demonstration for every METHODS entry but raw (identity-kind fusers)."""
    states = []
    for i in range(0, len(demos), batch):
        states += backbone.read_demos(demos[i:i + batch])
    out = {}
    for method, pool in METHODS.items():
        if method == "raw":
            continue
        fuser = Fuser(FusionConfig(hidden_size=backbone.hidden_size, kind="identity", pool_tokens=pool))
        out[method] = [f.to(backbone.dtype) for f in fuser.forward_batch(states, backbone.embed_tokens)]
    return out


def prompt(backbone, method, k, queries, demos, fused):
    images = [q[0] for q in queries]
    questions = [q[1] for q in queries]
    if k == 0:
        return assemble(backbone, "zero", images, questions)
    if method == "raw":
        return assemble(backbone, "raw", images, questions, demos=[demos[:k]] * len(queries))
    return assemble(backbone, "fused", images, questions, fused=[fused[method][:k]] * len(queries))


def largest_raw_k(backbone, query, pool, budget: int, zero: int, raw_tokens: dict, verify_limit: int) -> dict:
    """The largest k whose raw prompt fits ``budget`` tokens. A raw demonstration adds its image's tokens
    (the same for every easy-VQA image) and separators, plus its text tokens; that additive model is
    checked against the exact lengths already measured (``raw_tokens``: k -> tokens), then the boundary
    it predicts is settled by encoding prompts there, when k <= ``verify_limit`` (a prompt of hundreds of
    images takes GBs to encode on CPU)."""
    def length(k):
        return prompt(backbone, "raw", k, [query], pool, None).lengths[0]

    text = [len(backbone.demo_token_ids(d)) for d in pool]
    fixed = raw_tokens[1] - zero - text[0]

    def predicted(k):
        return zero + k * fixed + sum(text[i % len(text)] for i in range(k))

    model_ok = {k: predicted(k) == n for k, n in raw_tokens.items()}
    k = 0
    while predicted(k + 1) <= budget:
        k += 1
    out = {"k": k, "tokens_per_demo_besides_text": fixed, "additive_model_exact_at_measured_k": all(model_ok.values()),
           "predicted_tokens_at_k": predicted(k), "predicted_tokens_at_k_plus_1": predicted(k + 1)}
    if k + 1 <= min(verify_limit, len(pool)):
        while k > 0 and length(k) > budget:
            k -= 1
        while k + 1 <= len(pool) and length(k + 1) <= budget:
            k += 1
        out.update(k=k, verified_by_encoding=True, tokens_at_k=length(k) if k else zero,
                   tokens_at_k_plus_1=length(k + 1))
    else:
        out["verified_by_encoding"] = False
    return out


def largest_fused_k(zero: int, per_demo: list[int], context: int) -> dict:
    """Fused prompts add exactly their demos' fused tokens (check (a)), so cumulative sums are exact.
    ``per_demo``: fused tokens of the pool's demonstrations, cycled (every demo has at least one)."""
    total, k = zero, 0
    while total + per_demo[k % len(per_demo)] <= context:
        total += per_demo[k % len(per_demo)]
        k += 1
    return {"k": k, "tokens_at_k": total}


def demo_read_rate(backbone, pool, meter: Meter, batch: int = 16, count: int = 64) -> dict:
    """Demonstrations per second that ``read_demos`` gets through at ``batch`` (after one warm-up batch):
    the forward passes ``aim compress-demos`` makes per demonstration."""
    demos = (pool * (count // len(pool) + 1))[:count]
    backbone.read_demos(demos[:batch])
    meter.sync()
    start = time.perf_counter()
    for i in range(0, count, batch):
        backbone.read_demos(demos[i:i + batch])
    meter.sync()
    seconds = time.perf_counter() - start
    return {"batch": batch, "demos": count, "seconds": seconds, "demos_per_second": count / seconds}


def over_budget(args) -> bool:
    return args.budget_s is not None and time.perf_counter() - args.started > args.budget_s


def measure_geometry(name: str, args, meter: Meter) -> dict:
    g = geometry(name)
    real = geometry(name)
    if args.scale == "small":
        g = shrink(g, args)
    from tiny_models import vocab_size

    tok = build_processor(real).tokenizer
    full_params = parameter_count(real, tok, max(real["text"]["vocab_size"], vocab_size(tok)))
    start = time.perf_counter()
    backbone, vocab = build_backbone(name, g, args.device, args.dtype)
    built = time.perf_counter() - start
    weights_mb = sum(p.numel() * p.element_size() for p in backbone.model.parameters()) / MB
    logger.info("%s: built %s model in %.1f s (full geometry: %.2fB parameters)", name, args.scale, built,
                full_params / 1e9)
    records = aim.load_records("easy-vqa:train", args.pool)
    pool = [aim.Demo(load_image(r.image), r.question, r.answer) for r in records]
    tests = aim.load_records("easy-vqa:test")
    queries = [(load_image(tests[i * 97].image), tests[i * 97].question) for i in range(max(args.batch_sizes))]
    kmax = max(args.shots)
    fused = fused_variants(backbone, pool[:kmax])
    per_demo_tokens = [len(backbone.demo_token_ids(d)) for d in pool]  # identity fused tokens = text tokens

    # prompt tokens, exact, and check (a)
    zero = prompt(backbone, "zero", 0, queries[:1], pool, fused).lengths[0]
    tokens, check_a = {}, []
    for method in METHODS:
        tokens[method] = {}
        for k in args.shots:
            n = prompt(backbone, method, k, queries[:1], pool, fused).lengths[0]
            tokens[method][k] = n
            if method != "raw" and k:
                check_a.append(n - zero - sum(f.shape[0] for f in fused[method][:k]))
    budget = g["context"] - args.new_tokens  # the prompt and the answer's tokens must fit
    limits = {"raw": largest_raw_k(backbone, queries[0], pool, budget, zero, tokens["raw"], args.verify_limit),
              "fused": largest_fused_k(zero, per_demo_tokens, budget),
              "fused-pool4": largest_fused_k(zero, [min(4, n) for n in per_demo_tokens], budget),
              "fused-pool1": largest_fused_k(zero, [1] * len(per_demo_tokens), budget)}
    logger.info("%s: zero-shot %d tokens; %d-shot raw %d, fused %d; largest k in %d - %d: %s", name, zero, kmax,
                tokens["raw"][kmax], tokens["fused"][kmax], g["context"], args.new_tokens,
                {m: lim.get("k") for m, lim in limits.items()})

    # latency and memory: per batch size, every runnable configuration in turn, round-robin over the
    # repeats (order reversed every other pass; the first pass warms up), so background load falls on all
    rows = []
    configs = [("zero", 0)] + [(m, k) for m in METHODS for k in args.shots if k]
    for bs in args.batch_sizes:
        qs = queries[:bs]
        runnable = []
        for method, k in configs:
            n = tokens["raw" if method == "zero" else method][k]
            row = {"batch": bs, "method": method, "shots": k, "prompt_tokens": n}
            rows.append(row)
            if n + args.new_tokens > g["context"]:
                row["skipped"] = "past the context"
            elif not meter.cuda and n * bs > args.cpu_max_tokens:
                row["skipped"] = f"over --cpu-max-tokens {args.cpu_max_tokens} (prompt tokens x batch)"
            else:
                row["_samples"] = []
                runnable.append(row)
        for rep in range(args.repeats + 1):
            for row in (runnable if rep % 2 == 0 else runnable[::-1]):
                if "skipped" in row:
                    continue
                if over_budget(args) and rep >= 2:  # at least one timed repeat of every configuration
                    continue
                try:
                    t0 = time.perf_counter()
                    batch = prompt(backbone, row["method"], row["shots"], qs, pool, fused)
                    meter.sync()
                    assembly = time.perf_counter() - t0
                    _, prefill, decode = greedy_forced(backbone, batch, args.new_tokens, meter.sync)
                    del batch
                except torch.cuda.OutOfMemoryError:
                    row["skipped"] = "out of GPU memory"
                    torch.cuda.empty_cache()
                    continue
                if rep:
                    row["_samples"].append({"assembly": assembly, "prefill": prefill, "decode": decode,
                                            "total": assembly + prefill + decode})
        for row in runnable:
            samples = row.pop("_samples")
            if "skipped" not in row:
                row["seconds_per_batch"] = {p: statistics.median(s[p] for s in samples) for p in samples[0]}
                row["seconds_per_query"] = {p: v / bs for p, v in row["seconds_per_batch"].items()}

                def once():
                    b = prompt(backbone, row["method"], row["shots"], qs, pool, fused)
                    greedy_forced(backbone, b, args.new_tokens, meter.sync)

                try:
                    row["peak_mb"] = meter.peak_mb(once)
                except torch.cuda.OutOfMemoryError:
                    row["skipped"] = "out of GPU memory (memory run)"
                    del row["seconds_per_batch"], row["seconds_per_query"]
                    torch.cuda.empty_cache()
            logger.info("%s b=%d %s k=%d: %d tokens, %s", name, bs, row["method"], row["shots"], row["prompt_tokens"],
                        row.get("skipped") or f"{row['seconds_per_query']['total']:.3f} s/query, "
                                              f"{row['peak_mb']:.1f} MB peak")
    by = {(r["batch"], r["method"], r["shots"]): r for r in rows}
    for r in rows:
        z = by[(r["batch"], "zero", 0)]
        if "seconds_per_query" in r and "seconds_per_query" in z:
            r["vs_zero"] = {"total": r["seconds_per_query"]["total"] / z["seconds_per_query"]["total"],
                            "peak": r["peak_mb"] / z["peak_mb"] if z["peak_mb"] else None}
        raw = by.get((r["batch"], "raw", r["shots"]))
        if r["method"].startswith("fused") and raw and "seconds_per_query" in r and "seconds_per_query" in raw:
            r["vs_raw"] = {"total": r["seconds_per_query"]["total"] / raw["seconds_per_query"]["total"],
                           "peak": r["peak_mb"] / raw["peak_mb"] if raw["peak_mb"] else None}
    read_rate = demo_read_rate(backbone, pool, meter) if not over_budget(args) else None
    if read_rate:
        logger.info("%s: read_demos %.1f demos/s at batch %d", name, read_rate["demos_per_second"], read_rate["batch"])
    return {"geometry": real, "run_geometry": g, "scale": args.scale, "vocab_rows": vocab, "weights_mb": weights_mb,
            "demo_read_rate": read_rate,
            "parameters_full_geometry": full_params, "build_seconds": built, "context": g["context"],
            "zero_shot_tokens": zero, "prompt_tokens": tokens, "largest_k_in_context": limits,
            "check_a_fused_tokens_add_up": {"passed": not any(check_a), "prompts": len(check_a),
                                            "offsets": sorted(set(check_a))}, "rows": rows}


# ------------------------------------------------------------------ output
def table(result: dict) -> str:
    k = max(result["config"]["shots"])
    lines = [f"| geometry | context | zero-shot tokens | raw tokens @{k} | fused tokens @{k} | pool4 @{k} | pool1 @{k} "
             "| largest k raw | largest k fused | pool4 | pool1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, g in result["geometries"].items():
        t, lim = g["prompt_tokens"], g["largest_k_in_context"]
        lines.append(f"| {name} | {g['context']} | {g['zero_shot_tokens']} | {t['raw'][k]:,} | {t['fused'][k]:,} | "
                     f"{t['fused-pool4'][k]:,} | {t['fused-pool1'][k]:,} | "
                     + " | ".join(f"{lim[m]['k']:,}" + ("" if lim[m].get("verified_by_encoding", True)
                                                         else " (predicted)") for m in METHODS) + " |")
    lines += ["", "| geometry | batch | method | shots | prompt tokens | s/query | x zero | x raw (same k) | peak MB |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name, g in result["geometries"].items():
        for r in g["rows"]:
            if "seconds_per_query" not in r:
                lines.append(f"| {name} | {r['batch']} | {r['method']} | {r['shots']} | {r['prompt_tokens']:,} | "
                             f"{r.get('skipped')} | | | |")
                continue
            vs_raw = f"{r['vs_raw']['total']:.2f}" if "vs_raw" in r else ""
            lines.append(f"| {name} | {r['batch']} | {r['method']} | {r['shots']} | {r['prompt_tokens']:,} | "
                         f"{r['seconds_per_query']['total']:.3f} | {r['vs_zero']['total']:.2f} | {vs_raw} | "
                         f"{r['peak_mb']:.1f} |")
    rates = [(n, g["demo_read_rate"]) for n, g in result["geometries"].items() if g.get("demo_read_rate")]
    if rates:
        lines += ["", "| geometry | read_demos batch | demos/s (compress-demos' forward passes) |", "|---|---:|---:|"]
        lines += [f"| {n} | {r['batch']} | {r['demos_per_second']:.1f} |" for n, r in rates]
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["geometries"])
    shots = result["config"]["shots"]
    bs = min(result["config"]["batch_sizes"])
    fig, axes = plt.subplots(2, len(names), figsize=(3.4 * len(names), 6.4), squeeze=False)
    for col, name in enumerate(names):
        g = result["geometries"][name]
        ax = axes[0][col]
        for method in METHODS:
            ks = sorted(int(k) for k in g["prompt_tokens"][method])
            ax.plot(ks, [g["prompt_tokens"][method][k] for k in ks], marker="o", ms=3, label=method,
                    color=COLORS[method])
        ax.axhline(g["context"], color="red", ls="--", lw=0.8, label="context")
        ax.set_yscale("log")
        shots_axis(ax, shots)
        ax.set_title(f"{name}: prompt tokens", fontsize=9)
        ax = axes[1][col]
        for method in METHODS:
            rows = [r for r in g["rows"] if r["batch"] == bs and r["method"] in (method, "zero")
                    and "seconds_per_query" in r]
            ax.plot([r["shots"] for r in rows], [r["vs_zero"]["total"] for r in rows], marker="o", ms=3, label=method,
                    color=COLORS[method])
        shots_axis(ax, shots)
        ax.set_title(f"latency per query (x zero-shot), batch {bs}", fontsize=9)
    axes[0][0].legend(fontsize=7)
    if result["config"]["scale"] == "full":
        where = f"full size, {result['config']['dtype']}, {result['environment'].get('gpu', 'GPU')}"
    else:
        where = (f"CPU, scaled down ({result['config']['small_layers']} LLM layers of width "
                 f"{result['config']['small_hidden']}),\n{result['environment']['torch_threads']} thread(s), "
                 "background load present")
    fig.suptitle(f"random-weight models of real geometry; {where}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--geometries", default=",".join(GEOMETRIES), help="comma-separated: " + ", ".join(GEOMETRIES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--scale", choices=("full", "small"), default=None,
                    help="full: the real sizes (CUDA only); small: scaled-down widths (default on CPU)")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--shots", default=SHOTS)
    ap.add_argument("--batch-sizes", default=None,
                    help="comma-separated (default: 1,8 on CUDA, 1 on CPU; --quick on CPU: 1,2)")
    ap.add_argument("--new-tokens", type=int, default=10, help="answer tokens decoded per query (forced)")
    ap.add_argument("--repeats", type=int, default=3, help="timings are medians over this many runs (after a warm-up)")
    ap.add_argument("--pool", type=int, default=512, help="demonstrations (easy-VQA train) for the context search")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads")
    ap.add_argument("--verify-limit", type=int, default=128,
                    help="settle the largest raw k by encoding prompts at the boundary up to this many images")
    ap.add_argument("--cpu-max-tokens", type=int, default=8192, help="CPU: run no prompt (x batch) longer than this")
    ap.add_argument("--small-layers", type=int, default=2, help="scaled-down LLM layers")
    ap.add_argument("--small-hidden", type=int, default=256, help="scaled-down LLM width")
    ap.add_argument("--small-heads", type=int, default=4, help="scaled-down attention heads")
    ap.add_argument("--small-vision-layers", type=int, default=2, help="scaled-down vision tower layers")
    ap.add_argument("--small-vision-hidden", type=int, default=64, help="scaled-down vision tower width")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="start no new measurement after this many seconds (default: 420 on CUDA, none on CPU)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke version: shots 0,1,8, one repeat, LLaVA + Qwen2-VL (CPU: batches 1 and 2)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--replot", default=None, metavar="JSON",
                    help="no measuring: print the tables of a saved result and redraw its plot")
    args = ap.parse_args(argv)
    if args.replot:
        with open(args.replot) as f:
            result = json.load(f)
        for g in result["geometries"].values():  # JSON keys are strings
            g["prompt_tokens"] = {m: {int(k): v for k, v in t.items()} for m, t in g["prompt_tokens"].items()}
        print(table(result))
        png = args.plot or default_png(args.replot)
        plot(result, png)
        print(f"wrote {png}")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cuda = args.device.startswith("cuda")
    args.scale = args.scale or ("full" if cuda else "small")
    if args.scale == "full" and not cuda:
        ap.error("--scale full builds 7-8B models: only with --device cuda (CPU runs the scaled-down geometry)")
    args.dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    args.started = time.perf_counter()
    if cuda and args.budget_s is None:
        args.budget_s = 420.0
    if cuda and not args.quick:  # the GPU check's defaults, unless asked for more
        if args.geometries == ",".join(GEOMETRIES):
            args.geometries = "llava-1.5-7b,qwen2-vl-7b"
        if args.shots == SHOTS:
            args.shots = "0,8,32"
        if args.repeats == 3:
            args.repeats = 2
        if args.pool == 512:
            args.pool = 64
    if args.quick:
        args.shots, args.repeats, args.pool = "0,1,8", 1, 64
        if args.geometries == ",".join(GEOMETRIES):
            args.geometries = "llava-1.5-7b,qwen2-vl-7b"
    args.shots = sorted({int(s) for s in args.shots.split(",")} | {0, 1})  # 1: the raw per-demo cost
    default_batches = "1,8" if cuda else "1,2" if args.quick else "1"
    args.batch_sizes = [int(b) for b in (args.batch_sizes or default_batches).split(",")]
    torch.set_num_threads(args.threads)
    names = args.geometries.split(",")
    unknown = [n for n in names if n not in GEOMETRIES]
    if unknown:
        ap.error(f"unknown geometries {unknown}: use {', '.join(GEOMETRIES)}")
    meter = Meter(args.device)
    env = environment(args.threads)
    if cuda:
        env["gpu"] = torch.cuda.get_device_name()
    start = time.perf_counter()
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    arguments = sys.argv[1:] if argv is None else argv
    result = {"command": threads + ".venv/bin/python benchmarks/true_scale.py " + " ".join(arguments),
              "config": {k: (str(v) if isinstance(v, torch.dtype) else v) for k, v in vars(args).items()
                         if k not in ("out", "plot", "started")},
              "environment": env, "load_average": {"start": os.getloadavg()},
              "memory_method": "CUDA: torch.cuda.max_memory_allocated during one query minus the memory allocated "
                               "before it (weights); CPU: highest total of torch tensor bytes allocated during one "
                               "query (torch profiler)",
              "geometries": {}}
    tag = f"{'cuda' if cuda else 'cpu'}{'_quick' if args.quick else ''}"
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"true_scale_{tag}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    for name in names:
        if over_budget(args):
            result["geometries_not_run"] = names[names.index(name):]
            logger.info("over --budget-s %.0f: not running %s", args.budget_s, result["geometries_not_run"])
            break
        result["geometries"][name] = measure_geometry(name, args, meter)
        if cuda:
            torch.cuda.empty_cache()  # the geometry's model is gone with measure_geometry's frame
        result["load_average"][name] = os.getloadavg()
        result["elapsed_seconds"] = time.perf_counter() - start
        with open(out, "w") as f:  # what is measured so far survives a timeout
            json.dump(result, f, indent=2, default=str)
    result["elapsed_seconds"] = time.perf_counter() - start
    print(table(result))
    for name, g in result["geometries"].items():
        a = g["check_a_fused_tokens_add_up"]
        print(f"(a) {name}: fused prompt tokens = zero-shot + sum of fused tokens: "
              f"{'PASS' if a['passed'] else 'FAIL'} ({a['prompts']} prompts; fused - zero - sum: {a['offsets']})")
    png = args.plot or default_png(out)
    with open(out, "w") as f:
        json.dump(result, f, indent=2, default=str)
    plot(result, png)
    print(f"wrote {out} and {png}")


if __name__ == "__main__":
    main()
