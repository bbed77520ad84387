"""Do a demonstration's text-position hidden states carry its image? A linear probe per layer.

    python benchmarks/state_probe.py --backbone pocket --n 600

The backbone reads n Fashion-MNIST *train* images, each with a label-binding demonstration text
("Question: What is this? Answer: <made-up word>"), as `read_demos` does. For every layer, a ridge
classifier of the 10 classes is fitted on 75% of the demonstrations and scored on the rest, from the
RMS-normalised state at several text positions: the first text token (right after the image), the
"Answer" token, the last token, and the mean over the text. Reference: the same probe on the pooled
image embeddings themselves. If the states score like the image, the information a fuser needs is
there, and a fuser that fails has a problem of form or scale, not of content.
Writes benchmarks/results/state_probe.json.
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
from aim.backbones.base import Demo  # noqa: E402
from aim.data import fashion_mnist  # noqa: E402
from aim.data.binding import QUESTION, made_up_words  # noqa: E402
from aim.images import load_image  # noqa: E402


def probe(x: torch.Tensor, y: torch.Tensor, train: int, ridge: float = 10.0) -> float:
    """Held-out accuracy of a ridge classifier (one-hot least squares) on standardised features."""
    x = (x - x[:train].mean(0)) / (x[:train].std(0) + 1e-6)
    onehot = torch.nn.functional.one_hot(y, 10).float()
    a = x[:train]
    w = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1]), a.T @ onehot[:train])
    return float(((x[train:] @ w).argmax(1) == y[train:]).float().mean())


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="pocket")
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--layers", default="4,8,12,15,20,25,30")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "state_probe.json"))
    args = ap.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    backbone = load_backbone(args.backbone)
    arrays, labels = fashion_mnist.load_arrays("train")
    rng = np.random.default_rng(0)
    rows = rng.choice(len(labels), args.n, replace=False)
    words = made_up_words("train")
    demos = [Demo(Image.fromarray(arrays[i]).convert("RGB"), QUESTION, str(rng.choice(words))) for i in rows]
    y = torch.tensor(labels[rows]).long()
    positions = ("first", "answer", "last", "mean")
    feats = {layer: {p: [] for p in positions} for layer in layers}
    images = []
    start = time.perf_counter()
    for b in range(0, len(demos), args.batch_size):
        chunk = demos[b:b + args.batch_size]
        batch = backbone.encode([[load_image(d.image), backbone.demo_text(d)] for d in chunk], generation=False,
                                last_span=True)
        out = backbone.run(batch, hidden_states=True)
        images += list(backbone.image_features([d.image for d in chunk]))  # the mean of its image embeddings
        for i, (a, e) in enumerate(batch.last_spans):
            tokens = backbone.tokenizer.convert_ids_to_tokens(batch.input_ids[i, a:e].tolist())
            answer = max(j for j, t in enumerate(tokens) if "Answer" in t)
            for layer in layers:
                h = out.hidden_states[layer][i, a:e].float()
                h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
                for p, v in zip(positions, (h[0], h[answer], h[-1], h.mean(0))):
                    feats[layer][p].append(v)
    train = int(0.75 * args.n)
    result = {"args": vars(args), "backbone": backbone.fingerprint(), "seconds": time.perf_counter() - start,
              "image_embeddings_mean": probe(torch.stack(images), y, train), "layers": {}}
    print(f"10-class linear probe, {args.n - train} held-out demonstrations (chance 0.10)")
    print(f"reference, pooled image embeddings: {result['image_embeddings_mean']:.3f}")
    print("| layer | " + " | ".join(positions) + " |\n|---|" + "---|" * len(positions))
    for layer in layers:
        result["layers"][str(layer)] = {p: probe(torch.stack(feats[layer][p]), y, train) for p in positions}
        print(f"| {layer} | " + " | ".join(f"{result['layers'][str(layer)][p]:.3f}" for p in positions) + " |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
