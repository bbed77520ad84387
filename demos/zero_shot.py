"""Zero-shot and raw few-shot prompting of the pocket backbone through the Python API.

    .venv/bin/python demos/zero_shot.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aim  # noqa: E402
from aim.data.fashion_mnist import load_fashion_mnist  # noqa: E402

backbone = aim.load_backbone("pocket")
records = load_fashion_mnist("test", limit=6)

# zero-shot: one image and its question per prompt, answered in one batch
answers = backbone.answer([r.image for r in records], [r.question for r in records])
for r, g in zip(records, answers):
    print(f"{r.answer:12s} <- {g.text!r} ({g.prompt_tokens} prompt tokens)")

# raw multimodal few-shot: two demonstrations with their images, then the query
demos = [aim.Demo(r.image, r.question, r.answer) for r in records[:2]]
batch = backbone.encode([backbone.raw_icl_body(demos, records[2].image, records[2].question)])
print("2-shot:", backbone.generate(batch)[0].text, f"({batch.lengths[0]} prompt tokens)")
