"""One run in stages (setup, resume, fit, finish) and what it shows and records."""
