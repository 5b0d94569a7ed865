"""`s2s export`: a trained run's encoder and one-step decoder as ONNX graphs, with its
tokenisers and a small JSON config, for `s2s.exported` to run without PyTorch."""
