"""The generic training loop and what it needs: schedule, faults, signals, DDP, validation,
TensorBoard."""
