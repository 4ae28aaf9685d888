"""Worker process of the replicated work queue."""
