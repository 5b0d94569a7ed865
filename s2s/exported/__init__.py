"""Running a model that `s2s export` wrote, on onnxruntime and numpy alone: no module on
this package's import path imports torch, so an exported model translates on a machine
without PyTorch (`s2s translate DIR`, `s2s generate DIR` and `s2s transcribe DIR` send an
exported directory here)."""
