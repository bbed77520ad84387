"""What every trainer shares: the one loop (loop.py), the one loss (loss.py), the run config (config.py),
the run log (log.py) and training-sequence sources (sequences.py). Nothing here imports a backbone:
the trainers live with what they train (aim/backbones/pocket/, aim/fusion/train.py)."""
