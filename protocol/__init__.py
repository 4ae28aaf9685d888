"""What managers, workers and clients agree on: ids, limits, the wire format, the work itself.
Standard library only."""
