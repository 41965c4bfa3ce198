"""ESL hardening warnings (issue 12): shown at start, in GET /security/status
(`eslWarnings`) and as the metric fsguard_esl_hardening_warning{check}.

- default_password: `security.esl_password` is FreeSWITCH's default "ClueCon";
  anyone who reaches the Event Socket can run any command (CVE-2019-19492 class);
- exposed_host: `security.esl_host` is neither loopback nor a private address, so the
  Event Socket (plain text, password in clear) is reached over a public network.
"""

from __future__ import annotations

import ipaddress
import logging

from shared.config import Config

DEFAULT_PASSWORD = "ClueCon"
CHECKS: tuple[str, ...] = ("default_password", "exposed_host")
_LOCAL_NAMES = frozenset(("localhost", "localhost.localdomain", "ip6-localhost"))
# Loopback, RFC 1918, link-local, IPv6 ULA (Python's is_private also counts the
# documentation and benchmarking ranges, which are not where an ESL should listen).
_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
              "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10")
)  # fmt: skip


def _private(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host in _LOCAL_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: it may resolve to anything, say so
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in _PRIVATE)


def esl_warnings(config: Config) -> dict[str, str]:
    """check -> message, for each hardening check that fails (empty when all pass)."""
    sec = config.security
    out: dict[str, str] = {}
    if sec.esl_password == DEFAULT_PASSWORD:
        out["default_password"] = (
            'security.esl_password is FreeSWITCH\'s default "ClueCon" (CVE-2019-19492): '
            "set a strong password in event_socket.conf.xml and here"
        )
    if not _private(sec.esl_host):
        out["exposed_host"] = (
            f"security.esl_host {sec.esl_host!r} is not a loopback or private address: the "
            "Event Socket (plain text) should listen on loopback or a private network"
        )
    return out


def log_esl_warnings(config: Config, logger: logging.Logger) -> int:
    """One warning line per failed check (at start); returns how many."""
    warnings = esl_warnings(config)
    for check, message in warnings.items():
        logger.warning("ESL hardening (%s): %s", check, message)
    return len(warnings)
