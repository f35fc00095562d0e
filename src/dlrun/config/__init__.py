"""The typed config: the schema every run is checked against, torch-free."""
