"""Places that run workers: one module per backend."""
