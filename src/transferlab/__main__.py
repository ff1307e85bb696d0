"""`python -m transferlab [-m] [overrides]`: the Hydra app (runs and sweeps; see transferlab.sweep).
The DVC stages and the other commands are the console script `transferlab`."""

from transferlab.sweep import main

main()
