"""Prompt tokens of a k-shot query, fused demonstrations against raw ones, in the backbone's own
tokens (image tokens and fused tokens included).

    .venv/bin/python benchmarks/prompt_tokens.py --shots 0,4,16,64

Backbones: the pocket backbone (16 image tokens per image) and a random-weight model with
LLaVA-1.5's geometry (CLIP at 336 px, 14 px patches: 576 image tokens per image; token counts do not
depend on weights). Demonstrations: easy-VQA train questions; query: an easy-VQA test question.
Fused tokens are one per text token (the AIM default), computed by an identity fuser, which has the
same token count as any per-token fuser. Writes benchmarks/results/prompt_tokens.json.
"""
import argparse
import json
import os
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # tiny_models: the random-weight LLaVA-1.5 geometry

import aim  # noqa: E402
from aim.prompting import assemble  # noqa: E402


def counts(backbone, shots):
    pool = aim.load_records("easy-vqa:train", max(shots) or 1)
    query = aim.load_records("easy-vqa:test", 1)[0]
    demos = [aim.Demo(aim.images.load_image(r.image), r.question, r.answer) for r in pool]
    fused_all = [backbone.embed_tokens(s.token_ids) for s in backbone.read_demos(demos)]
    rows = []
    for k in shots:
        raw = assemble(backbone, "raw" if k else "zero", [query.image], [query.question], demos=[demos[:k]])
        fused = assemble(backbone, "fused" if k else "zero", [query.image], [query.question], fused=[fused_all[:k]])
        rows.append({"shots": k, "raw": raw.lengths[0], "fused": fused.lengths[0],
                     "ratio": raw.lengths[0] / fused.lengths[0]})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", default="0,4,16,64")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "prompt_tokens.json"))
    args = ap.parse_args()
    shots = [int(s) for s in args.shots.split(",")]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    import tiny_models

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        llava = aim.load_backbone(tiny_models.build_llava(os.path.join(tmp, "llava"), image_size=336))
        result["llava-1.5 geometry (576 image tokens, random weights)"] = counts(llava, shots)
    result["pocket (16 image tokens)"] = counts(aim.load_backbone("pocket"), shots)
    print("| backbone | shots | raw prompt tokens | fused prompt tokens | raw / fused |")
    print("|---|---|---|---|---|")
    for name, rows in result.items():
        for r in rows:
            print(f"| {name} | {r['shots']} | {r['raw']} | {r['fused']} | {r['ratio']:.1f}x |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
