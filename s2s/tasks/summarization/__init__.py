"""Summarisation: the translation model and trainer, validated and evaluated with ROUGE."""
