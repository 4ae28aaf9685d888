"""Manager node of the replicated work queue."""
