"""Sweeps (dlrun -m): the manifest, skipping and resuming jobs, the study, dlrun-report."""
