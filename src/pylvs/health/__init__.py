"""Real-server health checks as keepalived runs them: probes, up/down state, table reconciliation."""
