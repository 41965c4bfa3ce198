"""A worker's side of `reload`: apply the reloadable config keys to its engine.

The engine holds the worker's Config sections by reference, so thresholds and windows
take effect once `apply_in_place` re-assigned them; what the engine derived from the
config at start (matchers, the trusted set and the caches built on it, the idle horizon)
is rebuilt here. Tracked sources, their windows and counters, ban records and learned
whitelist entries are left as they are.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from shared.config import Config
from shared.iputil import NetworkSet
from shared.logs import set_level
from shared.ops.reload import Reloaded
from shared.reloadable import ReloadOrder, apply_in_place, touched

from . import rules
from .windows import BoundedCache

if TYPE_CHECKING:
    from .engine import DetectionEngine

log = logging.getLogger(__name__)


def merge_patterns(current: list[str], old_config: list[str], new_config: list[str]) -> list[str]:
    """Run-time patterns kept, config patterns replaced by the new config's."""
    new_keys = {p.strip().lower() for p in new_config}
    old_keys = {p.strip().lower() for p in old_config} - new_keys
    kept = [p for p in current if p.strip().lower() not in old_keys]
    have = {p.strip().lower() for p in kept}
    return kept + [p for p in new_config if p.strip().lower() not in have]


def refresh_engine(
    engine: DetectionEngine, config: Config, keys: list[str], old_untrusted: list[str]
) -> None:
    """Rebuild what the engine derived from `config` (already updated in place; the
    engine was built from it, so its section references are the same objects)."""
    sec = config.security
    if touched(keys, "security.trusted_networks"):
        trusted = NetworkSet()
        trusted_v6: list[ipaddress.IPv6Network] = []
        for cidr in sec.trusted_networks:  # validated by the loader
            trusted.add(cidr)
            net = ipaddress.ip_network(cidr.strip(), strict=False)
            if isinstance(net, ipaddress.IPv6Network):
                trusted_v6.append(net)
        engine._trusted = trusted
        engine._trusted_v6 = trusted_v6
        engine._bad_config = 0
        # memos of each source's key and trusted flag, and of IPv6 aggregation safety
        engine._sources = BoundedCache(engine._sources._cap)
        engine._prefix_safe = BoundedCache(engine._prefix_safe._cap)
    if touched(keys, "security.scanner_user_agents"):
        engine._scanner = rules.ScannerMatcher(sec.scanner_user_agents)
    if touched(keys, "security.untrusted_networks"):
        entries = merge_patterns(engine._untrusted_entries, old_untrusted,
                                 sec.untrusted_networks)  # fmt: skip
        engine._untrusted_entries = entries
        engine._untrusted = rules.UntrustedMatcher(entries)
    if touched(keys, "security.toll_fraud."):
        engine._toll = rules.TollFraudMatcher(sec.toll_fraud)
    if touched(keys, "freeswitch.default_domain"):
        engine._default_domain = config.freeswitch.default_domain
    rl, enum = sec.rate_limit, sec.enumeration
    engine._rate_on = rl.enabled
    engine._idle_after = max(
        sec.failed_attempts_window,
        sec.wrong_call_state_window,
        enum.window if enum.enabled else 0.0,
        rl.registration_window,
        rl.call_rate_interval,
    )


def apply(config: Config, engine: DetectionEngine, order: ReloadOrder) -> Reloaded:
    """The `reload` control op of a worker; `config` is the worker's (updated in place)."""
    old_untrusted = list(config.security.untrusted_networks)
    applied = apply_in_place(config, order)
    refresh_engine(engine, config, applied, old_untrusted)
    if "logging.level" in applied:
        set_level(config.logging.level)
    if applied:
        log.info("reloaded: %s", ", ".join(applied))
    return Reloaded(applied=applied)
