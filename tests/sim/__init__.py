"""A seeded, deterministic simulator of the real cluster: see __main__.py and the README."""
