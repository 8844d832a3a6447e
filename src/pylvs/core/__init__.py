"""The director core, sans-IO: model, table, schedulers, connection tracking, statistics."""
