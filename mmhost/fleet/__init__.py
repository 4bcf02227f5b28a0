"""Past one host: N ``mmhost serve`` replicas behind HAProxy, each model hot on one replica.

``haproxy_config`` writes the proxy's configuration (``mmhost fleet haproxy-config``); ``Fleet``
starts and supervises local replicas with HAProxy in front (``mmhost fleet up``).
"""

from mmhost.fleet.haproxy import Address, Ring, haproxy_config, parse_addresses
from mmhost.fleet.up import Fleet, FleetSpec, up

__all__ = ["Address", "Fleet", "FleetSpec", "Ring", "haproxy_config", "parse_addresses", "up"]
