"""The namespace lab: the seed's LVS cluster as network namespaces on one machine.

What this is for: tests, demos and people learning LVS get real hosts (client, directors, real
servers, app servers) with one call. What this is not for: anything on a production host.
"""

from pylvs.lab.lvs import LVSCluster
from pylvs.lab.topology import HOSTS, VIP, Lab, LabError, nginx_available

__all__ = ["HOSTS", "VIP", "LVSCluster", "Lab", "LabError", "nginx_available"]
