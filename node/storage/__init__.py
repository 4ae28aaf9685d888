"""Storage: the node's SQLite store."""
