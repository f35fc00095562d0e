"""dlrun's Ray launcher (hydra/launcher=ray): Hydra instantiates plugins only from hydra_plugins."""
