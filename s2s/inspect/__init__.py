"""Looking inside runs: the model card and pictures (learning curves, attention)."""
