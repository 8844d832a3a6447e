"""Command-line front ends: pylvsadm (ipvsadm-compatible) and the pylvs tool."""
