"""Worker scaling: a pure policy and the backends that start workers."""
