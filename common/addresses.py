"""Whether an IP address is one anyone on the internet can reach: for URLs careflow sends to
(webhooks) or hands to a provider to fetch (a text's media)."""

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
