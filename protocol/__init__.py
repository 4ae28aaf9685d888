"""What managers, workers and clients agree on: ids, limits, the wire format, the work itself,
and how a call fails over between nodes. Nothing of the node's: the standard library, and
aiohttp for the fail-over client."""
