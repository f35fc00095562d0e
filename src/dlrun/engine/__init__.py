"""Training itself: the loop, its steps, optimizers, schedules, checkpoints, devices; no Hydra
and no files of its own."""
