"""Which fuser design serves the pocket backbone best? Each design trained the same number of steps
on the same training-split episodes (or fitted in closed form only: 0 steps), then scored on
held-out label binding (Fashion-MNIST test images, made-up words never seen in training), side by
side with raw and text-only demonstrations.

    python benchmarks/fuser_designs.py --backbone pocket --steps 30 --n 60

Designs (one change at a time from the first, the default of `aim train fuser`):
- aligned-r4-rms-l15-lm: text embedding + W rms(layer-15 state) on the first 4 tokens, W started by
  least squares toward the demonstration's image pooled to 4 (aim/fusion/align.py); LM loss
- ...-closed-form: the least-squares start alone, no gradient step
- zero-r4-rms-l15-lm: W from zero instead (no aligned start)
- zero-all-rms-l15-lm: W from zero, added to every token (the design shipped before the aligned start)
- projection-rms-l15-lm: the pure projection of the AIM paper (no text embedding added, identity start)
- aligned-r4-rms-l15-distill: KL from the raw multimodal prompt instead of the LM loss
- closed-form variants (0 steps): the last layer's states or layer 8 instead of 15; 2 or 8 written
  tokens instead of 4; no normalisation of the states; the demonstration pooled to 4 fused tokens
Runs resume (training and evaluation); writes benchmarks/results/fuser_designs.json and prints a table.
"""
import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aim import load_backbone  # noqa: E402
from aim.data.spec import load_records  # noqa: E402
from aim.eval.config import IclEvalConfig  # noqa: E402
from aim.eval.runner import icl_eval  # noqa: E402
from aim.fusion import TRAINED_FUSER, Fuser, FuserTrainConfig, FusionConfig, train_fuser  # noqa: E402

BASE = dict(objective="lm", residual=True, normalize="rms", layer=15, pool_tokens=None, residual_tokens=4,
            align=512)
CLOSED = {"steps": 0}
DESIGNS = {
    "aligned-r4-rms-l15-lm": {},
    "aligned-r4-rms-l15-closed-form": CLOSED,
    "zero-r4-rms-l15-lm": {"align": 0},
    "zero-all-rms-l15-lm": {"align": 0, "residual_tokens": None},
    "projection-rms-l15-lm": {"align": 0, "residual": False, "residual_tokens": None},
    "aligned-r4-rms-l15-distill": {"objective": "distill"},
    "aligned-r4-rms-last-closed-form": {"layer": -1, **CLOSED},
    "aligned-r4-rms-l8-closed-form": {"layer": 8, **CLOSED},
    "aligned-r2-rms-l15-closed-form": {"residual_tokens": 2, **CLOSED},
    "aligned-r8-rms-l15-closed-form": {"residual_tokens": 8, **CLOSED},
    "aligned-r4-none-l15-closed-form": {"normalize": "none", **CLOSED},
    "aligned-pool4-rms-l15-closed-form": {"pool_tokens": 4, **CLOSED},
}
CELLS = (("fashion-mnist-binding-2way:test", 8), ("fashion-mnist-binding-5way:test", 10))
FUSION_FIELDS = {f.name for f in dataclasses.fields(FusionConfig)}


def train_config(folder: str, design: dict) -> FuserTrainConfig:
    """A design (fuser fields and training fields in one dict) as the trainer's config."""
    fusion = {k: v for k, v in design.items() if k in FUSION_FIELDS}
    if fusion.get("normalize") == "none":
        fusion["target_norm"] = None  # the target norm scales RMS-normalised states only
    run = {k: v for k, v in design.items() if k not in FUSION_FIELDS}
    return FuserTrainConfig(out=folder, fusion=dataclasses.replace(TRAINED_FUSER, **fusion), **run)


def evaluate(backbone, fuser, methods, n: int, seeds, output: str, batch_size: int) -> dict:
    out = {}
    for spec, k in CELLS:
        records = load_records(spec, n)
        cfg = IclEvalConfig(dataset=spec, methods=methods, shots=(k,), seeds=seeds, limit=n, batch_size=batch_size)
        doc = icl_eval(backbone, records, cfg, output, fuser=fuser, progress=False)
        for method in methods:
            cell = doc["results"][spec][method][str(k)]
            out[f"{spec.split('-')[-1].split(':')[0]} k={k} {method}"] = {
                "mean": cell["accuracy"]["mean"], "std": cell["accuracy"]["std"],
                "prompt_tokens": cell["prompt_tokens"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="pocket")
    ap.add_argument("--steps", type=int, default=30, help="training steps of the trained designs")
    ap.add_argument("--n", type=int, default=100, help="label-binding queries per cell")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--runs", default="runs/fuser-designs")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "fuser_designs.json"))
    args = ap.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))

    backbone = load_backbone(args.backbone)
    result = {"args": vars(args), "backbone": backbone.fingerprint(), "designs": {}}
    if os.path.isfile(args.out):
        old = json.load(open(args.out))
        if old.get("backbone") == result["backbone"]:
            result["designs"] = old.get("designs", {})
    base_eval = os.path.join(args.runs, "baselines")
    result["baselines"] = evaluate(backbone, None, ("zero", "raw", "text"), args.n, seeds, base_eval, args.batch_size)
    print(json.dumps(result["baselines"], indent=1), flush=True)
    for name in args.designs.split(","):
        folder = os.path.join(args.runs, name)
        design = {**BASE, "steps": args.steps, **DESIGNS[name]}
        cfg = train_config(folder, design)
        start = time.perf_counter()
        train_fuser(backbone, cfg)
        minutes = (time.perf_counter() - start) / 60
        fuser = Fuser.from_pretrained(folder, backbone=backbone)
        log = [json.loads(line) for line in open(os.path.join(folder, "log.jsonl"))]
        evals = [r for r in log if "val_loss" in r]
        scores = evaluate(backbone, fuser, ("fused",), args.n, seeds, os.path.join(folder, "eval"), args.batch_size)
        result["designs"][name] = {"config": design, "train_minutes_this_call": minutes,
                                   "val_loss_start": evals[0]["val_loss"], "val_loss_end": evals[-1]["val_loss"],
                                   "scores": scores}
        print(name, json.dumps(result["designs"][name]["scores"]), flush=True)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)

    cols = [f"{spec.split('-')[-1].split(':')[0]} k={k}" for spec, k in CELLS]
    print("\n| design | " + " | ".join(cols) + " | held-out loss (start -> end) |")
    print("|---|" + "---|" * (len(cols) + 1))
    for method in ("zero", "raw", "text"):
        print(f"| {method} (baseline) | " + " | ".join(
            f"{result['baselines'][f'{c} {method}']['mean']:.3f}" for c in cols) + " | |")
    for name, row in result["designs"].items():
        print(f"| fused: {name} | " + " | ".join(f"{row['scores'][f'{c} fused']['mean']:.3f}" for c in cols) +
              f" | {row['val_loss_start']:.3f} -> {row['val_loss_end']:.3f} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
