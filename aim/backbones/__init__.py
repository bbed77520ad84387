"""Frozen MLLMs behind one protocol (base.py), loaded by name, folder or hub id (registry.py)."""
from .base import Backbone, Demo, DemoStates, Encoded, Generation, PromptBatch, Virtual
from .registry import available, load_backbone

__all__ = ["Backbone", "Demo", "DemoStates", "Encoded", "Generation", "PromptBatch", "Virtual",
           "available", "load_backbone"]
