"""Evaluation: answer metrics and scoring of model outputs."""
