"""Scheduling: leases, the roster of live workers, the leader's duties."""
