"""Run directories: layout, checkpoints, atomic writes, resume state, the lock, averaging,
the metrics log."""
