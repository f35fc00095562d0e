"""dlrun: one command for small deep-learning experiments."""

__version__ = "0.1.0"
