"""The firewall part of `fsguard status`: which backend holds the bans, read from the
kernel through GET /security/iptables (fields `backend`, `ruleset`; docs/nftables.md)."""

from __future__ import annotations

from typing import Any

from .ops_client import ApiError, OpsClient


def firewall_summary(client: OpsClient) -> dict[str, Any] | None:
    """{"backend", "chain", "set", "kernelEntries", "ruleset"}; None when unavailable."""
    try:
        info = client.iptables()
    except ApiError:
        return None
    if not isinstance(info, dict):
        return None
    return {
        "backend": info.get("backend", "ipset"),
        "chain": info.get("chain"),
        "set": info.get("ipset"),
        "kernelEntries": info.get("count"),
        "ruleset": info.get("ruleset"),
    }


def firewall_line(fw: dict[str, Any]) -> str:
    ruleset = fw.get("ruleset") or {}
    if fw["backend"] == "nftables":
        chain = ruleset.get("chain") or {}
        where = (
            f"table {ruleset.get('table')}, chain {fw['chain']} "
            f"(hook {chain.get('hook')}, priority {chain.get('prio')})"
            if ruleset.get("present", True)
            else f"table {ruleset.get('table')} MISSING"
        )
    else:
        where = f"ipset {fw['set']}, chain {fw['chain']}"
    return f"  firewall   {fw['backend']}: {where}, {fw['kernelEntries']} kernel entries"
