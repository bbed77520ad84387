"""Evaluation: answer metrics (metrics.py), zero-shot answering (answer.py) and ``aim icl-eval``:
its configuration (config.py), loop (runner.py), run folder (run_folder.py), memory figures
(memory.py) and reports (report.py)."""
