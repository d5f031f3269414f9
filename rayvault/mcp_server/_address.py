"""The ``--http HOST:PORT`` address of the MCP server, and whether it is a loopback one."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from rayvault.learning.exceptions import InvalidInputError

#: The interface the HTTP transport binds when given a port alone.
DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class HttpAddress:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect (127.0.0.0/8, ::1, localhost)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve to any interface
            return False

    @property
    def url(self) -> str:
        """The MCP endpoint's URL (the SDK serves it under ``/mcp``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/mcp"


def parse_http_address(text: str) -> HttpAddress:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``PORT`` (on 127.0.0.1)."""
    value = text.strip()
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, value
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise InvalidInputError(
            f"--http {text!r}: write an IPv6 address in brackets, e.g. [::1]:8765"
        )
    if not host:
        host = DEFAULT_HOST
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(
            f"--http {text!r}: expected HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:8765"
        )
    return HttpAddress(host, int(port))
