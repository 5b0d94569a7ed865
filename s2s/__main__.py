"""`python -m s2s` (and `torchrun -m s2s`) run the same CLI as the `s2s` script."""

from s2s.cli import script

script()
