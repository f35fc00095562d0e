"""The run directory's contract, torch-free: its file names, records, lock and atomic writes."""
