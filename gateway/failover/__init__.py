"""Failover: classify errors, back off, break circuits, and run a plan of targets within one deadline."""
