"""The pocket backbone: load time (cold and cached) and zero-shot accuracy with and without the image.

    python benchmarks/pocket_zero_shot.py --n 500

Cold load converts the GGUF into a fresh cache folder (as on a new machine); cached load reuses it;
both run in a fresh Python process. Accuracy: the official VQA accuracy (easy-VQA: one answer per
question), exact match (Fashion-MNIST: any accepted class name, e.g. "sneaker" or "shoe") and the
answer-contained rate on a seeded sample of easy-VQA test questions and Fashion-MNIST test images
("What is shown in the image?"), against the same LLM given the question alone (no image).
Writes benchmarks/results/pocket_zero_shot.json.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aim import load_backbone  # noqa: E402
from aim.data.spec import load_records  # noqa: E402
from aim.eval.answer import answer_records, score  # noqa: E402

LOAD = "import time; t = time.perf_counter(); from aim import load_backbone; load_backbone({!r}); print(time.perf_counter() - t)"


def load_seconds(backbone: str, cache: str) -> float:
    env = dict(os.environ, AIM_CACHE=cache, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", LOAD.format(backbone)], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return float(out.stdout.strip().splitlines()[-1])


def question_type(record) -> str:
    if record.answer in ("yes", "no"):
        return "yes/no"
    from aim.data.easy_vqa import SHAPES

    return "shape" if record.answer in SHAPES else "colour"


def caption_oracle(backbone, records, batch_size: int) -> dict:
    """The frozen LLM given the scene's caption as text ("A red triangle.") instead of the image."""
    from aim.data.easy_vqa import scene_captions

    scenes = scene_captions("test")
    keep = [r for r in records if r.extra["image_id"] in scenes]
    preds = []
    for i in range(0, len(keep), batch_size):
        chunk = keep[i:i + batch_size]
        bodies = []
        for r in chunk:
            color, shape = scenes[r.extra["image_id"]]
            bodies.append([f"\nImage: a {color} {shape}."] + backbone.query_body(None, r.question))
        preds += [g.text for g in backbone.generate(backbone.encode(bodies), max_new_tokens=10)]
    row = {"dataset": "easy-vqa:test", "image": "caption text", **score(preds, keep)}
    row["by_type"] = {}
    for kind in ("yes/no", "shape", "colour"):
        idx = [i for i, r in enumerate(keep) if question_type(r) == kind]
        row["by_type"][kind] = score([preds[i] for i in idx], [keep[i] for i in idx])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="pocket")
    ap.add_argument("--n", type=int, default=500, help="questions per dataset")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-load-times", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "pocket_zero_shot.json"))
    args = ap.parse_args()

    result = {"backbone": args.backbone, "n": args.n, "seed": args.seed}
    if not args.skip_load_times:
        with tempfile.TemporaryDirectory() as cache:
            result["load_seconds_cold"] = load_seconds(args.backbone, cache)
            result["load_seconds_cached"] = load_seconds(args.backbone, cache)
        print(f"load: cold {result['load_seconds_cold']:.1f} s (GGUF conversion included), "
              f"cached {result['load_seconds_cached']:.1f} s")

    backbone = load_backbone(args.backbone)
    result["fingerprint"] = backbone.fingerprint()
    rng = np.random.default_rng(args.seed)
    rows = []
    for spec in ("easy-vqa:test", "fashion-mnist:test"):
        records = load_records(spec)
        records = [records[i] for i in sorted(rng.choice(len(records), size=args.n, replace=False))]
        for use_image in (True, False):
            start = time.perf_counter()
            gens = answer_records(backbone, records, args.batch_size, use_image=use_image,
                                  desc=f"{spec} {'image' if use_image else 'no image'}")
            seconds = time.perf_counter() - start
            preds = [g.text for g in gens]
            row = {"dataset": spec, "image": use_image, **score(preds, records),
                   "seconds_per_question": seconds / len(records),
                   "prompt_tokens": float(np.mean([g.prompt_tokens for g in gens])),
                   "examples": [{"question": r.question, "prediction": p, "answers": r.answers[:1]}
                                for r, p in zip(records[:12], preds[:12])]}
            if spec.startswith("easy-vqa"):
                row["by_type"] = {}
                for kind in ("yes/no", "shape", "colour"):
                    idx = [i for i, r in enumerate(records) if question_type(r) == kind]
                    row["by_type"][kind] = score([preds[i] for i in idx], [records[i] for i in idx])
            rows.append(row)
            print(f"{spec:20s} {'image' if use_image else 'no image':9s} VQA acc {row['vqa_accuracy']:.3f} "
                  f"exact {row['exact_match']:.3f} contains {row['contains']:.3f} "
                  f"({row['seconds_per_question']:.2f} s/question)", flush=True)
        if spec.startswith("easy-vqa"):
            rows.append(caption_oracle(backbone, records, args.batch_size))
            print(f"{spec:20s} caption   VQA acc {rows[-1]['vqa_accuracy']:.3f} (the scene's caption as text, "
                  "in place of the image: what a perfect connector could give this frozen LLM)", flush=True)
    result["rows"] = rows

    print("\n| dataset | input | VQA accuracy | exact match | answer contained | prompt tokens |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        kind = r["image"] if isinstance(r["image"], str) else "image + question" if r["image"] else "question only"
        vqa = "n/a" if r["dataset"].startswith("fashion") else f"{r['vqa_accuracy']:.3f}"
        print(f"| {r['dataset']} | {kind} | "
              f"{vqa} | {r['exact_match']:.3f} | {r['contains']:.3f} | {r.get('prompt_tokens', 0):.0f} |")
    for r in rows:
        if "by_type" in r:
            kinds = ", ".join(f"{k} {v['vqa_accuracy']:.3f} (n={v['n']})" for k, v in r["by_type"].items())
            print(f"easy-VQA {r['image'] if isinstance(r['image'], str) else 'image' if r['image'] else 'no image'}"
                  f" by question type: {kinds}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
