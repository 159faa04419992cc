"""Where connectors may connect: the egress policy, applied to the addresses a host name resolves to.

A connector resolves a host once, asks the policy which of the addresses it may use, and connects
to one of those, never resolving the name again (so a DNS answer that changes between the check and
the connection, DNS rebinding, cannot slip past). The rules, in order:

1. Denied: host names in ``CONNECTOR_PROXY_EGRESS_DENY_HOSTS`` (and cloud metadata names), and
   addresses in ``CONNECTOR_PROXY_EGRESS_DENY_CIDRS`` (and link-local and cloud metadata ranges).
   An IPv6 address that carries an IPv4 one (``::ffff:169.254.169.254``, NAT64, 6to4) is denied
   when either is. Deny always wins.
2. When ``CONNECTOR_PROXY_EGRESS_ALLOW_HOSTS`` or ``CONNECTOR_PROXY_EGRESS_ALLOW_CIDRS`` is set,
   only a host name in the first or an address in the second is allowed.
3. Anything else is allowed (loopback and private networks included).

Host names match exactly or, written ``*.example.com``, any name below example.com (not
example.com itself); matching ignores case and a trailing dot. A name's addresses that are denied
are skipped; when none is left the call fails with ``EgressDenied`` (PERMISSION_DENIED, HTTP 403),
naming the rule, and a WARNING is logged with the host and port only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from server.errors import EgressDenied

__all__ = [
    "ENV_ALLOW_CIDRS",
    "ENV_ALLOW_HOSTS",
    "ENV_DENY_CIDRS",
    "ENV_DENY_HOSTS",
    "EgressDenied",
    "EgressPolicy",
    "Lookup",
    "denied",
    "is_address",
]

logger = logging.getLogger(__name__)

ENV_DENY_CIDRS = "CONNECTOR_PROXY_EGRESS_DENY_CIDRS"
ENV_ALLOW_CIDRS = "CONNECTOR_PROXY_EGRESS_ALLOW_CIDRS"
ENV_DENY_HOSTS = "CONNECTOR_PROXY_EGRESS_DENY_HOSTS"
ENV_ALLOW_HOSTS = "CONNECTOR_PROXY_EGRESS_ALLOW_HOSTS"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Looks a host name up: its addresses, as text, in the order to try them.
Lookup = Callable[[str, int], Awaitable[Sequence[str]]]

_METADATA = "default: link-local and cloud metadata"
_DEFAULT_DENIED_NETWORKS: tuple[tuple[str, str], ...] = (
    ("169.254.0.0/16", _METADATA),  # AWS, GCP, Azure, OCI metadata; ECS task metadata
    ("fe80::/10", "default: link-local"),
    ("fd00:ec2::254/128", "default: cloud metadata"),  # AWS's IPv6 instance metadata
    ("100.100.100.200/32", "default: cloud metadata"),  # Alibaba Cloud's instance metadata
)
_DEFAULT_DENIED_HOSTS = ("metadata.google.internal", "metadata.goog")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


@dataclass(frozen=True)
class _NetworkRule:
    network: Network
    source: str  # where the rule comes from, as the message names it


@dataclass(frozen=True)
class _HostRule:
    pattern: str  # "example.com" or "*.example.com"
    source: str

    def matches(self, name: str) -> bool:
        if self.pattern.startswith("*."):
            return name.endswith(self.pattern[1:])
        return name == self.pattern


def is_address(host: str) -> bool:
    """Whether ``host`` is an IP address literal (IPv6 with or without brackets)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def _getaddrinfo(host: str, port: int) -> Sequence[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class EgressPolicy:
    """The rules every connector applies before it connects; see the module's docstring.

    Build it with ``from_env``; the default instance has the default rules only.

    Args:
        lookup: how host names are resolved (``getaddrinfo`` on the event loop's executor).
    """

    deny_networks: tuple[_NetworkRule, ...] = tuple(
        _NetworkRule(ipaddress.ip_network(cidr), source) for cidr, source in _DEFAULT_DENIED_NETWORKS
    )
    allow_networks: tuple[Network, ...] = ()
    deny_hosts: tuple[_HostRule, ...] = tuple(
        _HostRule(name, "default: cloud metadata") for name in _DEFAULT_DENIED_HOSTS
    )
    allow_hosts: tuple[_HostRule, ...] = ()
    lookup: Lookup = field(default=_getaddrinfo, compare=False, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, lookup: Lookup | None = None) -> EgressPolicy:
        """Reads the ``CONNECTOR_PROXY_EGRESS_*`` variables (comma-separated lists).

        Raises:
            ValueError: a range that is not a CIDR (or has host bits set), or a host name
                pattern that is not a name or ``*.name``.
        """
        env = os.environ if env is None else env
        default = cls()
        return cls(
            deny_networks=default.deny_networks
            + tuple(_NetworkRule(n, ENV_DENY_CIDRS) for n in _networks(env, ENV_DENY_CIDRS)),
            allow_networks=_networks(env, ENV_ALLOW_CIDRS),
            deny_hosts=default.deny_hosts + _hosts(env, ENV_DENY_HOSTS),
            allow_hosts=_hosts(env, ENV_ALLOW_HOSTS),
            lookup=lookup or _getaddrinfo,
        )

    @property
    def restricted(self) -> bool:
        """Whether an allow-list is set (only what it names may be reached)."""
        return bool(self.allow_networks or self.allow_hosts)

    def host_denial(self, host: str) -> str | None:
        """Why a host name is denied by a host-name rule, or None."""
        name = _name(host)
        for rule in self.deny_hosts:
            if rule.matches(name):
                return f"{name} is a denied host name ({rule.source}: {rule.pattern})"
        return None

    def address_denial(self, host: str, address: str) -> str | None:
        """Why connecting to ``address`` (one of ``host``'s) is denied, or None when it is allowed."""
        try:
            parsed = ipaddress.ip_address(address.split("%", 1)[0].strip("[]"))
        except ValueError:
            return f"{address} is not an IP address"
        for form in _forms(parsed):
            for rule in self.deny_networks:
                if form in rule.network:
                    return f"{address} is in the denied range {rule.network} ({rule.source})"
        if not self.restricted:
            return None
        canonical = _canonical(parsed)
        if any(canonical in network for network in self.allow_networks):
            return None
        name = _name(host)
        if any(rule.matches(name) for rule in self.allow_hosts):
            return None
        return _not_allowed(self, name, address)

    def check_host(self, host: str, port: int, *, connector: str) -> None:
        """Refuses a host name a host-name rule denies, before it is resolved.

        Raises:
            EgressDenied: the host name is denied.
        """
        reason = self.host_denial(host)
        if reason is not None:
            raise self._denied(connector, host, port, [reason])

    def permitted(self, host: str, port: int, addresses: Iterable[str], *, connector: str) -> list[str]:
        """The addresses of ``host`` that may be used, in order.

        Raises:
            EgressDenied: the host name is denied, or every address is (logged as a WARNING).
        """
        reason = self.host_denial(host)
        if reason is not None:
            raise self._denied(connector, host, port, [reason])
        allowed: list[str] = []
        reasons: list[str] = []
        for address in addresses:
            denial = self.address_denial(host, address)
            if denial is None:
                allowed.append(address)
            else:
                reasons.append(denial)
        if not allowed:
            raise self._denied(connector, host, port, reasons or [f"{host} has no address"])
        return allowed

    def check_unresolved(self, host: str, port: int, *, connector: str) -> None:
        """Checks a host that another machine resolves (the target of an HTTP proxy): its name,
        and its address when it is one; under an allow-list, a name must be on it.

        Raises:
            EgressDenied: the host is not allowed.
        """
        if is_address(host):
            self.permitted(host, port, [host.strip("[]")], connector=connector)
            return
        reason = self.host_denial(host)
        name = _name(host)
        if reason is None and self.restricted and not any(rule.matches(name) for rule in self.allow_hosts):
            reason = f"{name} is not in {ENV_ALLOW_HOSTS}, and a proxy resolves it"
        if reason is not None:
            raise self._denied(connector, host, port, [reason])

    async def resolve(self, host: str, port: int, *, connector: str) -> list[str]:
        """Looks ``host`` up once and returns the addresses that may be used, in order.

        Raises:
            EgressDenied: the host name or every address is denied.
            OSError: the lookup failed (``socket.gaierror``).
        """
        self.check_host(host, port, connector=connector)  # a denied name is not even looked up
        bare = host.strip("[]")
        addresses = [bare] if is_address(bare) else await self.lookup(host, port)
        return self.permitted(host, port, addresses, connector=connector)

    async def connect_socket(self, host: str, port: int, *, connector: str) -> tuple[socket.socket, str]:
        """A TCP socket connected to an allowed address of ``host``, and that address: the name is
        resolved once, and the addresses tried in order.

        Raises:
            EgressDenied: the host name or every address is denied.
            OSError: the lookup failed, or no allowed address accepted the connection.
        """
        loop = asyncio.get_running_loop()
        last = OSError(f"no address of {host} to connect to")
        for address in await self.resolve(host, port, connector=connector):
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (address, port))
            except OSError as exc:
                sock.close()
                last = exc
            except BaseException:
                sock.close()
                raise
            else:
                return sock, address
        raise last

    def _denied(self, connector: str, host: str, port: int, reasons: list[str]) -> EgressDenied:
        return denied(connector, host, port, "; ".join(reasons[:4]) + ("; ..." if len(reasons) > 4 else ""))


def denied(connector: str, host: str, port: int, reason: str) -> EgressDenied:
    """The failure of a denied connection, logged as a WARNING (host, port and rule: no secret)."""
    logger.warning("egress denied: %s may not connect to %s:%s: %s", connector, host, port, reason)
    message_text = f"The egress policy does not allow connecting to {host}:{port}: {reason}."
    return EgressDenied(message_text)


def _name(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def _forms(address: Address) -> list[Address]:
    """The address and the IPv4 addresses it carries (mapped, NAT64, IPv4-compatible, 6to4)."""
    forms: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            forms.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            forms.append(address.sixtofour)
        if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
            forms.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return forms


def _canonical(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _not_allowed(policy: EgressPolicy, name: str, address: str) -> str:
    if policy.allow_networks and policy.allow_hosts:
        return f"{address} is not in {ENV_ALLOW_CIDRS} and {name} is not in {ENV_ALLOW_HOSTS}"
    if policy.allow_networks:
        return f"{address} is not in {ENV_ALLOW_CIDRS}"
    return f"{name} is not in {ENV_ALLOW_HOSTS}"


def _items(env: Mapping[str, str], name: str) -> list[str]:
    return [part.strip() for part in env.get(name, "").split(",") if part.strip()]


def _networks(env: Mapping[str, str], name: str) -> tuple[Network, ...]:
    networks: list[Network] = []
    for item in _items(env, name):
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            msg = f"{name} must list CIDR ranges such as 10.0.0.0/8 or fd00::/8, got {item!r} ({exc})"
            raise ValueError(msg) from None
    return tuple(networks)


def _hosts(env: Mapping[str, str], name: str) -> tuple[_HostRule, ...]:
    rules: list[_HostRule] = []
    for item in _items(env, name):
        pattern = item.lower().rstrip(".")
        if is_address(pattern):
            ranges = name.replace("_HOSTS", "_CIDRS")
            msg = f"{name} lists host names; {item!r} is an address: put it in {ranges}"
            raise ValueError(msg)
        labels = pattern.removeprefix("*.").split(".")
        if not pattern or not all(_LABEL.fullmatch(label) for label in labels):
            msg = f"{name} must list host names such as api.example.com or *.example.com, got {item!r}"
            raise ValueError(msg)
        rules.append(_HostRule(pattern, name))
    return tuple(rules)
