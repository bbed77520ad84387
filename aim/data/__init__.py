"""Readers of datasets into one record type (record.py)."""
from .record import Record

__all__ = ["Record"]
