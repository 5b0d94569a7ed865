"""Data: sentencepiece tokenisers, corpora through HF datasets, token-budget batches, archives."""
