"""The `reload` order every process but the supervisor answers (the supervisor sends it).

Request: `shared.reloadable.ReloadOrder` (the validated new config, secrets blanked, and
the reloadable keys to take from it). Replies: the keys a process applied; the firewall
also names the bans it lifted and the untrusted patterns it changed. Each role declares
its `reload` op in its own registry (shared/ops/worker.py, firewall.py, api.py).
"""

from __future__ import annotations

import msgspec

from shared.reloadable import ReloadOrder

__all__ = ["FirewallReloaded", "ReloadOrder", "Reloaded"]

DOC = "apply the reloadable keys of a new config in place"


class Reloaded(msgspec.Struct, kw_only=True):
    applied: list[str]  # the keys whose value changed here


class FirewallReloaded(msgspec.Struct, kw_only=True, omit_defaults=True):
    applied: list[str]
    liftedBans: list[str] = []  # bans inside newly trusted networks, lifted
    untrusted: list[str] = []  # "+pattern" / "-pattern": config untrusted patterns changed
