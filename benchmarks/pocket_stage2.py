"""Does the pocket backbone keep its own abilities after stage 2? Stage 1 against stage 2, side by side.

    python benchmarks/pocket_stage2.py --stage1 pocket:aim/backbones/pocket/checkpoints/connector --stage2 pocket --n 500

On test splits only, for each backbone:
- captioning: "Describe the image briefly." on easy-VQA test scenes and Fashion-MNIST test images;
  a caption is right when it names the scene's colour and shape (easy-VQA) or one of the class's
  names (Fashion-MNIST); plus the held-out caption loss (cross-entropy of "A <colour> <shape>." /
  "A <class>." given image and instruction, as stage 1 was trained);
- zero-shot easy-VQA (official VQA accuracy, by question type) and Fashion-MNIST (exact match).
Writes benchmarks/results/pocket_stage2.json.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aim import load_backbone  # noqa: E402
from aim.backbones.base import Virtual  # noqa: E402
from aim.data import easy_vqa, fashion_mnist  # noqa: E402
from aim.data.spec import load_records  # noqa: E402
from aim.eval.answer import answer_records, score  # noqa: E402
from aim.eval.metrics import normalize_answer  # noqa: E402
from aim.training.loss import answer_loss, answer_prompts  # noqa: E402

INSTRUCTION = "Describe the image briefly."


def caption_items(n: int, seed: int) -> list[tuple[Image.Image, str, list[list[str]]]]:
    """(image, reference caption, word groups a right caption names one of each) on test splits."""
    rng = np.random.default_rng(seed)
    scenes, paths = easy_vqa.scene_captions("test"), easy_vqa.image_paths("test")
    ids = sorted(scenes)
    items = []
    for i in rng.choice(len(ids), size=n, replace=False):
        color, shape = scenes[ids[i]]
        items.append((Image.open(paths[ids[i]]).convert("RGB"), f"A {color} {shape}.", [[color], [shape]]))
    arrays, labels = fashion_mnist.load_arrays("test")
    for i in rng.choice(len(labels), size=n, replace=False):
        names = fashion_mnist.CLASSES[int(labels[i])]
        items.append((Image.fromarray(arrays[i]).convert("RGB"),
                      f"{'An' if names[0][0] in 'aeiou' else 'A'} {names[0]}.", [names]))
    return items


def names_all(caption: str, groups: list[list[str]]) -> bool:
    text = f" {normalize_answer(caption)} "
    return all(any(f" {normalize_answer(w)} " in text for w in group) for group in groups)


@torch.no_grad()
def caption_eval(backbone, items, batch_size: int) -> dict:
    right, losses, texts = [], [], []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        batch = backbone.encode([[img, "\n" + INSTRUCTION] for img, _, _ in chunk])
        gens = backbone.generate(batch, max_new_tokens=16)
        right += [names_all(g.text, groups) for g, (_, _, groups) in zip(gens, chunk)]
        texts += [g.text for g in gens]
        embeds = backbone.image_embeds([img for img, _, _ in chunk])
        prompts = answer_prompts(backbone, [[Virtual(e), "\n" + INSTRUCTION] for e in embeds],
                                 [" " + ref for _, ref, _ in chunk], end=backbone.end_of_turn)
        losses += answer_loss(backbone, prompts).losses.tolist()
    half = len(items) // 2
    return {"caption_right_easy_vqa": float(np.mean(right[:half])), "caption_right_fashion": float(np.mean(right[half:])),
            "caption_loss_easy_vqa": float(np.mean(losses[:half])), "caption_loss_fashion": float(np.mean(losses[half:])),
            "examples": [{"reference": items[i][1], "caption": texts[i]} for i in (0, 1, 2, half, half + 1, half + 2)]}


def zero_shot(backbone, n: int, seed: int, batch_size: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for spec in ("easy-vqa:test", "fashion-mnist:test"):
        records = load_records(spec)
        records = [records[i] for i in sorted(rng.choice(len(records), size=n, replace=False))]
        preds = [g.text for g in answer_records(backbone, records, batch_size, desc=spec)]
        out[spec] = score(preds, records)
        if spec.startswith("easy"):
            for kind, test in (("yes/no", lambda a: a in ("yes", "no")), ("shape", lambda a: a in easy_vqa.SHAPES),
                               ("colour", lambda a: a in easy_vqa.COLORS)):
                idx = [i for i, r in enumerate(records) if test(r.answer)]
                out[f"{spec} {kind}"] = score([preds[i] for i in idx], [records[i] for i in idx])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage1", default="pocket:aim/backbones/pocket/checkpoints/connector")
    ap.add_argument("--stage2", default="pocket")
    ap.add_argument("--labels", default="stage 1,stage 2",
                    help="names of the two columns (e.g. 'before,after' to compare two stage-2 checkpoints)")
    ap.add_argument("--n", type=int, default=500, help="zero-shot questions per dataset")
    ap.add_argument("--captions", type=int, default=200, help="caption images per dataset")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "pocket_stage2.json"))
    args = ap.parse_args()

    items = caption_items(args.captions, args.seed)
    result = {"args": vars(args), "backbones": {}}
    labels = args.labels.split(",")
    for label, name in zip(labels, (args.stage1, args.stage2)):
        backbone = load_backbone(name)
        start = time.perf_counter()
        row = {"backbone": name, "fingerprint": backbone.fingerprint(), **caption_eval(backbone, items, args.batch_size)}
        row["zero_shot"] = zero_shot(backbone, args.n, args.seed, args.batch_size)
        row["seconds"] = time.perf_counter() - start
        result["backbones"][label] = row
        print(f"{label}: {json.dumps({k: v for k, v in row.items() if k not in ('zero_shot', 'fingerprint')})}",
              flush=True)

    s1, s2 = result["backbones"][labels[0]], result["backbones"][labels[1]]
    print(f"\n| measure (test splits) | {labels[0]} | {labels[1]} |")
    print("|---|---|---|")
    for key, name in (("caption_right_easy_vqa", "caption names colour and shape (easy-VQA)"),
                      ("caption_right_fashion", "caption names the class (Fashion-MNIST)"),
                      ("caption_loss_easy_vqa", "caption loss, easy-VQA (lower is better)"),
                      ("caption_loss_fashion", "caption loss, Fashion-MNIST (lower is better)")):
        print(f"| {name} | {s1[key]:.3f} | {s2[key]:.3f} |")
    for key in s1["zero_shot"]:
        metric = "exact_match" if key.startswith("fashion") else "vqa_accuracy"
        print(f"| zero-shot {key} ({metric}, n={s1['zero_shot'][key]['n']}) | {s1['zero_shot'][key][metric]:.3f} | "
              f"{s2['zero_shot'][key][metric]:.3f} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
