"""Few-shot prompting with a demo bank through aim.FewShot (pocket backbone, offline).

    .venv/bin/python demos/fewshot.py

Builds a small bank from easy-VQA training questions (resumable: run it twice and the second run
adds nothing), then answers test questions with 8 retrieved demonstrations per query, fused and raw,
and prints what each prompt cost. The identity fuser keeps each demonstration's own text
embeddings; a trained fuser (`aim train fuser`, coming) adds what the image contributed.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aim  # noqa: E402

fs = aim.FewShot.from_pretrained("pocket", fuser="identity")
fs.compress(aim.load_records("easy-vqa:train", 200), "runs/demo-bank", keys=("image", "text"))
queries = aim.load_records("easy-vqa:test", 4)
images, questions = [q.image for q in queries], [q.question for q in queries]
for method in ("zero", "text", "raw", "fused"):
    answers = fs.generate(images, questions, shots=0 if method == "zero" else 8, select="image", method=method)
    for q, a in zip(queries, answers):
        print(f"{method:5s} | {q.question:40s} | {a.text:20s} | gold {q.answer:9s} | {a.prompt_tokens} tokens")
