"""A state directory fsguard cannot write at start (read-only, full, missing rights).

Detection must not stop because a disk did: instead of exiting, the firewall runs on a
scratch store in the runtime directory (tmpfs: not durable), says so loudly (ERROR once
a minute, fsguard_firewall_store_degraded = 1) and keeps enforcing in the kernel. The
kernel's existing entries are adopted by the start-up reconcile (the scratch store is
empty), so nothing is unbanned. Each tick it tries the real store again; once it opens,
the scratch's bans, whitelist and run-time patterns are written into it and it takes
over.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

from shared.config import Config

from .store import Store, StoreError, default_path

log = logging.getLogger("fsguard.firewall")

SCRATCH_DIR = "scratch-state"
_UNWRITABLE = ("not writable", "read-only", "readonly", "cannot create", "No space",
               "disk is full", "cannot open state file", "Permission denied")  # fmt: skip


def unwritable(exc: StoreError, state_dir: str) -> bool:
    """Whether the store failed because the directory or disk refuses writes (as opposed
    to a corrupted file, a newer schema or a second owner, which stay fatal)."""
    text = str(exc)
    if "in use by another process" in text or "corrupted" in text or "schema" in text:
        return False
    if any(word in text for word in _UNWRITABLE):
        return True
    return os.path.isdir(state_dir) and not os.access(state_dir, os.W_OK | os.X_OK)


def open_scratch(config: Config) -> Store:
    """A fresh scratch store under the runtime directory."""
    path = os.path.join(config.paths.runtime_dir, SCRATCH_DIR)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o750)
    return Store(default_path(path))


def try_real(config: Config) -> Store | None:
    """The real store when it can be opened for writing now, else None."""
    state_dir = config.paths.state_dir
    try:
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
        store = Store(default_path(state_dir))
    except (OSError, StoreError):
        return None
    try:
        with store._tx("writable probe") as db:
            db.execute("CREATE TABLE IF NOT EXISTS _probe (x)")
            db.execute("DROP TABLE _probe")
    except StoreError:
        store.close()
        return None
    return store


def copy_state(scratch: Store, real: Store) -> int:
    """Write what the scratch store holds into the real one; returns the bans copied."""
    now = time.time()
    bans = scratch.active_bans(now)
    if bans:
        real.add_bans(bans)
    for rec in scratch.whitelist_active(now):
        real.whitelist_add(rec)
    for pattern, source in scratch.patterns():
        if source == "runtime":
            real.pattern_add(pattern, now, "runtime")
    return len(bans)
