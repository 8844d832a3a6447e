"""What keepalived tracks for both VRRP instances and checkers: files holding a number
(``track_file``, FILE_CHECK) and running processes (``vrrp_track_process``).

They sit below ``vrrp`` and ``health`` so that each of those can use them without importing
the other.
"""
