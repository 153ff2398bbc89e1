"""What every stage runs on: pinned numerics (reproducibility), data-parallel processes,
provenance records and model cards, native code in a child process, quiet warnings."""
