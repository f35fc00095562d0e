"""The dlrun command, torch-free: argv checked, task files found, Hydra run; torch waits for
the first run."""
