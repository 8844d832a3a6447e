"""The director daemon: holds the table, serves the control socket, runs a data plane."""
