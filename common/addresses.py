"""Whether an IP address (or a host) is one anyone on the internet can reach: for URLs careflow
sends to (webhooks) or hands to a provider to fetch or call (a text's media, its status
callbacks)."""

import ipaddress


def address_forbidden(address: str) -> bool:
    """True for an address a webhook must not reach: anything but a public unicast one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    # is_global alone lets multicast through; the rest are listed so the rule reads plainly.
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


# Host names no one outside the machine or its own network can resolve.
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


def host_unreachable(host: str) -> str:
    """Why no one on the internet can reach `host`, as far as can be told without DNS (a
    name's address may change, and the provider, not careflow, resolves it): "address" for an
    IP address that is not public (loopback, private, link-local, reserved), "name" for
    localhost, a single-label name or a local suffix; "" when it may be reachable."""
    try:
        return "address" if address_forbidden(host) else ""
    except ValueError:  # a name, not an address
        pass
    local = host == "localhost" or host.endswith(LOCAL_SUFFIXES) or "." not in host
    return "name" if local else ""
