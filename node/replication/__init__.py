"""Replication: Raft commands, the state machine, the pysyncobj adapter, proposals, and the
payload copies between nodes."""
