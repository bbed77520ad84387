"""Through which demonstration forms does the frozen backbone bind labels? Oracles for the fuser.

    python benchmarks/demo_forms.py --backbone pocket --n 100 --seeds 0

Label binding on Fashion-MNIST test images with held-out made-up words (as benchmarks/label_binding.py),
scored by the first answer token restricted to the episode's words (chance 1/ways). Each form keeps
the demonstrations and the query fixed and changes only what stands for a demonstration:
- raw: the image tokens, then the text;
- text: the text alone;
- fused: the fuser's tokens (one per text token);
- pooled-m + text: the image tokens averaged down to m tokens, then the text (m extra tokens);
- text, first m += image pooled to m: the text tokens, the first m of them with the image pooled to
  m added (no extra tokens: what an ideal residual fuser with residual_tokens = m writes);
- text, all += image mean: every text token with the image's mean added.
The oracle forms use the image embeddings themselves, which a fuser never sees: they say what a
fuser could reach, and in which form the LLM reads an image. Writes benchmarks/results/demo_forms.json.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aim import load_backbone  # noqa: E402
from aim.backbones.base import Demo, Virtual  # noqa: E402
from aim.fusion import load_fuser  # noqa: E402
from aim.data.binding import SOURCES, binding_records, episode_demos  # noqa: E402
from aim.fusion import pool_tokens  # noqa: E402

TASKS = {2: 8, 5: 10}


def forms(backbone, fuser, demos):
    """Each form's demonstration segments."""
    text = [backbone.embed_tokens(backbone.demo_token_ids(d)) for d in demos]
    images = backbone.image_embeddings([d.image for d in demos])

    def added(m):
        out = []
        for t, e in zip(text, images):
            add = pool_tokens(e.float(), m).to(t)[:t.shape[0]]
            out.append(Virtual(torch.cat([t[:len(add)] + add, t[len(add):]])))
        return out

    out = {"raw": None, "text": [Virtual(t) for t in text]}
    if fuser is not None:
        out["fused"] = [Virtual(f) for f in fuser.fuse_demos(backbone, demos)]
    for m in (1, 4):
        out[f"pooled-{m} + text"] = [segment for e, t in zip(images, text)
                                     for segment in (Virtual(pool_tokens(e.float(), m).to(t)), Virtual(t))]
    for m in (1, 2, 4, 8):
        out[f"text, first {m} += image pooled to {m}"] = added(m)
    out["text, all += image mean"] = [Virtual(t + e.float().mean(0).to(t)) for t, e in zip(text, images)]
    return out


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="pocket")
    ap.add_argument("--fuser", default=None, help="fuser folder (default: the one that ships for the backbone)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--ways", default="2,5")
    ap.add_argument("--source", default="fashion-mnist", choices=SOURCES,
                    help="images: Fashion-MNIST test, or procedural textures no checkpoint saw")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "demo_forms.json"))
    args = ap.parse_args()
    backbone = load_backbone(args.backbone)
    fuser = load_fuser(args.fuser, backbone)
    result = {"args": vars(args), "backbone": backbone.fingerprint(), "fuser": fuser.source, "tasks": {}}
    for ways in (int(w) for w in args.ways.split(",")):
        k = TASKS[ways]
        right, tokens = {}, {}
        start = time.perf_counter()
        for seed in (int(s) for s in args.seeds.split(",")):
            records = binding_records("test", ways=ways, n=args.n, seed=0, max_shots=16, source=args.source)
            for b in range(0, len(records), args.batch_size):
                chunk = records[b:b + args.batch_size]
                bodies, candidates = {}, []
                for r in chunk:
                    demos = [Demo(d.image, d.question, d.answer) for d in episode_demos(r, k, seed)]
                    query = backbone.query_body(r.image, r.question)
                    for name, segments in forms(backbone, fuser, demos).items():
                        raw = segments is None
                        body = backbone.raw_icl_body(demos, r.image, r.question) if raw else segments + query
                        bodies.setdefault(name, []).append(body)
                    candidates.append((sorted({d.answer for d in demos}), r.answers[0]))
                for name, group in bodies.items():
                    batch = backbone.encode(group)
                    logits = backbone.next_token_logits(batch)
                    tokens.setdefault(name, []).extend(batch.attention_mask.sum(1).tolist())
                    for row, (words, gold) in zip(logits, candidates):
                        first = [backbone.tokenizer(" " + w, add_special_tokens=False).input_ids[0] for w in words]
                        right.setdefault(name, []).append(words[int(row[first].argmax())] == gold)
        task = {name: {"accuracy": float(np.mean(v)), "queries": len(v), "prompt_tokens": float(np.mean(tokens[name]))}
                for name, v in right.items()}
        result["tasks"][f"{args.source} {ways}-way k={k}"] = {"forms": task, "seconds": time.perf_counter() - start}
        print(f"\n{args.source}, {ways}-way k={k} (chance {1 / ways:.2f}), {len(right['raw'])} queries")
        print("| demonstration form | accuracy | prompt tokens |\n|---|---|---|")
        for name, cell in task.items():
            print(f"| {name} | {cell['accuracy']:.3f} | {cell['prompt_tokens']:.0f} |", flush=True)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
