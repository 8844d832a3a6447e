"""The local control socket between pylvsadm and the director daemon."""
