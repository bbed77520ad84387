"""What a demo bank costs on disk in each storage format, and what each format does to accuracy.

    python benchmarks/bank_storage.py --sizes-only              # bytes per demonstration, a minute
    python benchmarks/bank_storage.py --n 100                    # + accuracy on the pocket backbone

Bytes: for each geometry (the pocket's input-embedding width, LLaVA-1.5-7B's 4096, Qwen2-VL-7B's 3584,
Idefics2-8B's 4096) and each format (aim/storage.py), a real bank of `--demos` demonstrations is
written with `DemoBank.append` (fused tokens of that width, `--tokens` per demonstration: about a
VQA demonstration's text; metadata; an image key of the LLM's width, as `Backbone.image_features`
gives it) and its folder measured; the figure is
bytes per demonstration, and the projection to VQAv2 train (443,757 questions) is that times the
count. Random tokens stand in for fused ones: size does not depend on the values.

Accuracy (the pocket backbone and its shipped fuser, seed 0): label binding 2-way k=8 on Fashion-MNIST
test images (held-out words; episodes are fused on the fly, so each format's loss is applied to the
fused tokens with `aim.storage.roundtrip`, exactly what a bank of that format returns), and easy-VQA
(`--n` test questions, 8 retrieved-at-random demonstrations from a bank of 500 training questions
built in each format), and the share of queries answered exactly as with float32. Writes benchmarks/results/bank_storage.json and prints both tables.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aim.bank import DemoBank  # noqa: E402
from aim.storage import STORAGES, roundtrip  # noqa: E402

#: geometry -> input-embedding width of its LLM
GEOMETRIES = {"pocket (SmolLM2-135M)": 576, "LLaVA-1.5-7B": 4096, "Qwen2-VL-7B": 3584, "Idefics2-8B": 4096}
VQAV2_TRAIN = 443_757


def bank_bytes(width: int, storage: str, demos: int, tokens: int, folder: str) -> dict:
    g = torch.Generator().manual_seed(0)
    fp = {"family": "bench", "hidden_size": width}
    bank = DemoBank.create(folder, fp, {"kind": "bench"}, width, storage=storage)
    for start in range(0, demos, 256):
        n = min(256, demos - start)
        fused = [torch.randn(tokens, width, generator=g) * 3 for _ in range(n)]
        metas = [{"question": "What colour is the bus on the left?", "answers": ["red"] * 10,
                  "image": f"/data/coco/train2014/COCO_train2014_{start + i:012d}.jpg"} for i in range(n)]
        # the image key is the mean of the image's embeddings as the LLM receives them: width-d
        bank.append([f"q{start + i}" for i in range(n)], fused, metas, {"image": torch.randn(n, width, generator=g)})
    total = bank.size_bytes()
    tokens_file = sum(s["bytes"] for s in bank.manifest["shards"])
    return {"bytes_per_demo": total / demos, "shard_bytes_per_demo": tokens_file / demos,
            "vqav2_train_gb": total / demos * VQAV2_TRAIN / 1e9}


def sizes(args) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, width in GEOMETRIES.items():
            out[name] = {}
            for storage in STORAGES:
                folder = os.path.join(tmp, f"{width}-{storage}")
                out[name][storage] = bank_bytes(width, storage, args.demos, args.tokens, folder)
                shutil.rmtree(folder)
    return out


def predictions(run: str) -> dict:
    """query id -> the answer given, from a run folder's samples."""
    import glob

    [path] = glob.glob(os.path.join(run, "*", "samples.jsonl"))  # the run's own folder inside the output
    with open(path) as f:
        return {s["id"]: s["prediction"] for s in map(json.loads, f) if "prediction" in s}


def accuracy(args) -> dict:
    import aim
    from aim.eval.config import IclEvalConfig
    from aim.eval.runner import icl_eval
    from aim.fusion import load_fuser

    backbone = aim.load_backbone("pocket")
    result = {"backbone": backbone.fingerprint(), "binding": {}, "easy_vqa": {}}
    binding = aim.load_records("fashion-mnist-binding-2way:test", args.n)
    questions = aim.load_records("easy-vqa:test", args.n)
    pool = aim.load_records("easy-vqa:train", 500)
    runs = tempfile.mkdtemp(prefix="aim-storage-runs-")
    try:
        for storage in STORAGES:
            fuser = load_fuser(None, backbone)
            plain = fuser.fuse_demos
            fuser.fuse_demos = lambda bb, demos, grad=False, _f=plain, _s=storage: [roundtrip(t, _s)
                                                                                     for t in _f(bb, demos, grad)]
            start = time.perf_counter()
            cfg = IclEvalConfig(dataset=f"binding-{storage}", methods=("fused",), shots=(8,), seeds=(0,),
                                limit=args.n, batch_size=16)
            doc = icl_eval(backbone, binding, cfg, os.path.join(runs, f"binding-{storage}"), fuser=fuser)
            cell = doc["results"][f"binding-{storage}"]["fused"]["8"]
            result["binding"][storage] = {"accuracy": cell["accuracy"]["mean"], "seconds": time.perf_counter() - start}
            fuser.fuse_demos = plain
            start = time.perf_counter()
            bank = os.path.join(runs, f"bank-{storage}")
            aim.compress_demos(backbone, fuser, pool, bank, batch_size=16, storage=storage, progress=False)
            cfg = IclEvalConfig(dataset=f"easy-vqa-{storage}", methods=("fused",), shots=(8,), seeds=(0,),
                                limit=args.n, batch_size=16)
            doc = icl_eval(backbone, questions, cfg, os.path.join(runs, f"vqa-{storage}"), fuser=fuser, bank=bank)
            cell = doc["results"][f"easy-vqa-{storage}"]["fused"]["8"]
            result["easy_vqa"][storage] = {"accuracy": cell["accuracy"]["mean"], "seconds": time.perf_counter() - start}
            for task, folder in (("binding", "binding"), ("easy_vqa", "vqa")):
                answers = predictions(os.path.join(runs, f"{folder}-{storage}"))
                reference = predictions(os.path.join(runs, f"{folder}-float32"))
                result[task][storage]["same_answer_as_float32"] = (
                    sum(answers[q] == reference.get(q) for q in answers) / len(answers))
            print(f"{storage}: binding {result['binding'][storage]['accuracy']:.3f}, easy-VQA "
                  f"{result['easy_vqa'][storage]['accuracy']:.3f}", flush=True)
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", type=int, default=512, help="demonstrations per measured bank")
    ap.add_argument("--tokens", type=int, default=15, help="fused tokens per demonstration")
    ap.add_argument("--n", type=int, default=100, help="queries per accuracy cell")
    ap.add_argument("--sizes-only", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bank_storage.json"))
    args = ap.parse_args()
    result = {"args": vars(args), "sizes": sizes(args)}
    print(f"bytes per demonstration ({args.tokens} fused tokens, metadata, a float32 image key of the LLM's width), and VQAv2 "
          f"train ({VQAV2_TRAIN:,} demonstrations) projected:")
    print("| geometry | width | " + " | ".join(STORAGES) + " |")
    print("|---|---|" + "---|" * len(STORAGES))
    for name, row in result["sizes"].items():
        cells = [f"{row[s]['bytes_per_demo'] / 1024:.1f} KB ({row[s]['vqav2_train_gb']:.1f} GB)" for s in STORAGES]
        print(f"| {name} | {GEOMETRIES[name]} | " + " | ".join(cells) + " |")
    if not args.sizes_only:
        result["accuracy"] = accuracy(args)
        acc = result["accuracy"]
        print(f"\naccuracy, pocket backbone, seed 0, {args.n} queries: fused 8-shot")
        print("| task | " + " | ".join(STORAGES) + " |")
        print("|---|" + "---|" * len(STORAGES))
        for task, name in (("binding", "label binding 2-way k=8 (Fashion-MNIST, held-out words)"),
                           ("easy_vqa", "easy-VQA, random demonstrations from a bank")):
            print(f"| {name} | " + " | ".join(f"{acc[task][s]['accuracy']:.3f} ({acc[task][s]['same_answer_as_float32']:.0%} "
                                              "same answer)" for s in STORAGES) + " |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
