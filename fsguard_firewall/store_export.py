"""Export and import of the state (Go entry shapes plus fsguard's fields); an import is
validated entirely before one transaction writes it.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from .store_db import StoreDb
from .store_records import (
    BAN_SOURCES,
    CONTROL_CHARS,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    MAX_TEXT,
    WHITELIST_SOURCES,
    BanRecord,
    ImportDataError,
    WhitelistRecord,
    normalize_key,
    rfc3339,
)
from .store_schema import (
    BAN_COLS,
    BAN_INSERT,
    WL_COLS,
    WL_INSERT,
    ban_row,
    bans_from_rows,
    wl_from_row,
    wl_row,
)


class ExportImport(StoreDb):
    """export_json / import_json."""

    # --- export / import -----------------------------------------------------------------

    def export_json(self) -> dict[str, Any]:
        """Bans, whitelist and runtime patterns in the Go entry shapes (camelCase, RFC 3339)
        plus fsguard's own fields. Expired rows not yet purged are included; import skips
        them."""
        with self._read("export") as db:
            bans = bans_from_rows(db.execute(f"SELECT {BAN_COLS} FROM bans").fetchall())
            wl = [wl_from_row(r) for r in db.execute(f"SELECT {WL_COLS} FROM whitelist")]
            pats = [
                r[0]
                for r in db.execute(
                    "SELECT pattern FROM untrusted_patterns WHERE source = 'runtime' "
                    "ORDER BY pattern"
                )
            ]
        return {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "blacklist": {
                b.key: {
                    "ip": b.key,
                    "addedAt": rfc3339(b.created),
                    "expiresAt": None if b.expires is None else rfc3339(b.expires),
                    "reason": b.reason,
                    "failCount": _fail_count(b.evidence),
                    "permanent": b.expires is None,
                    "rule": b.rule,
                    "source": b.source,
                    "decisionId": b.decision_id,
                    "user": b.user,
                    "evidence": b.evidence,
                }
                for b in bans
            },
            "whitelist": {
                w.ip: {
                    "ip": w.ip,
                    "addedAt": rfc3339(w.added),
                    "expiresAt": None if w.expires is None else rfc3339(w.expires),
                    "lastSeen": rfc3339(w.last_seen),
                    "userId": w.user_id,
                    "domain": w.domain,
                    "permanent": w.expires is None,
                    "source": w.source,
                }
                for w in wl
            },
            "untrustedPatterns": pats,
        }

    def import_json(self, data: Any, now: float) -> int:
        """Merge an export into the store: all or nothing, in one transaction.

        Every entry is validated before anything is written (ImportDataError names the
        first bad one). Entries already expired at `now` are skipped. Imported entries
        replace existing ones with the same key. Returns how many entries were written.
        """
        bans, wl, pats = _parse_import(data, now)
        with self._tx("import") as db:
            db.executemany(BAN_INSERT, [ban_row(b) for b in bans])
            db.executemany(WL_INSERT, [wl_row(w) for w in wl])
            db.executemany(
                "INSERT OR IGNORE INTO untrusted_patterns VALUES (?, ?, 'runtime')",
                [(p, now) for p in pats],
            )
        return len(bans) + len(wl) + len(pats)


# --------------------------------------------------------------------------
# Import validation
# --------------------------------------------------------------------------

_RFC3339_FRACTION = re.compile(r"(\.\d{6})\d+")


def _fail_count(evidence: dict[str, Any]) -> int:
    """Go's failCount: the evidence "count" when the caller stored one."""
    count = evidence.get("count", 0)
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def _bad(where: str, what: str) -> ImportDataError:
    return ImportDataError(f"import refused, nothing written: {where}: {what}")


def _time(value: Any, where: str) -> float:
    """RFC 3339 text (Go's, with up to nanoseconds) or epoch seconds."""
    if isinstance(value, bool):
        raise _bad(where, f"invalid time {value!r}")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str) and len(value) <= 40:
        try:
            text = _RFC3339_FRACTION.sub(r"\1", value.replace("z", "Z"))
            ts = datetime.fromisoformat(text).timestamp()
        except ValueError:
            raise _bad(where, f"invalid time {value!r}") from None
    else:
        raise _bad(where, f"invalid time {value!r}")
    if not math.isfinite(ts) or ts < 0:
        raise _bad(where, f"invalid time {value!r}")
    return ts


def _text(entry: dict[str, Any], name: str, where: str, default: str = "") -> str:
    value = entry.get(name, default)
    if value is None:
        value = default
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise _bad(f"{where}.{name}", f"expected a string of at most {MAX_TEXT} characters")
    return value


def _expiry(entry: dict[str, Any], where: str) -> float | None:
    permanent = entry.get("permanent", False)
    if not isinstance(permanent, bool):
        raise _bad(f"{where}.permanent", "expected true or false")
    if permanent:
        return None
    if entry.get("expiresAt") is None:
        raise _bad(f"{where}.expiresAt", "required unless permanent is true")
    return _time(entry["expiresAt"], f"{where}.expiresAt")


def _entries(data: dict[str, Any], name: str) -> list[tuple[str, dict[str, Any]]]:
    section = data.get(name, {})
    if isinstance(section, dict):
        items = list(section.items())
    elif isinstance(section, list):
        items = [(str(i), e) for i, e in enumerate(section)]
    else:
        raise _bad(name, "expected an object keyed by IP or a list")
    for label, entry in items:
        if not isinstance(entry, dict):
            raise _bad(f"{name}[{label!r}]", "expected an object")
    return items


def _parse_import(
    data: Any, now: float
) -> tuple[list[BanRecord], list[WhitelistRecord], list[str]]:
    if not isinstance(data, dict):
        raise _bad("top level", "expected a JSON object")
    if data.get("format", EXPORT_FORMAT) != EXPORT_FORMAT:
        raise _bad("format", f"expected {EXPORT_FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != EXPORT_VERSION:
        raise _bad("version", f"unsupported version {data.get('version')!r} (known: 1)")
    unknown = set(data) - {"format", "version", "blacklist", "whitelist", "untrustedPatterns"}
    if unknown:
        raise _bad("top level", f"unknown keys {sorted(unknown)}")
    bans: dict[str, BanRecord] = {}
    for label, e in _entries(data, "blacklist"):
        where = f"blacklist[{label!r}]"
        try:
            key, family = normalize_key(e.get("ip", label))
        except ValueError as exc:
            raise _bad(where, str(exc)) from None
        source = _text(e, "source", where, "manual")
        if source not in BAN_SOURCES:
            raise _bad(f"{where}.source", f"expected one of {', '.join(BAN_SOURCES)}")
        evidence = e.get("evidence", {})
        if not isinstance(evidence, dict):
            raise _bad(f"{where}.evidence", "expected an object")
        expires = _expiry(e, where)
        if expires is not None and expires <= now:
            continue
        bans[key] = BanRecord(
            key=key,
            family=family,
            rule=_text(e, "rule", where, "import"),
            reason=_text(e, "reason", where),
            created=_time(e.get("addedAt", now), f"{where}.addedAt"),
            expires=expires,
            source=source,
            decision_id=_text(e, "decisionId", where),
            user=_text(e, "user", where),
            evidence=evidence,
        )
    wl: dict[str, WhitelistRecord] = {}
    for label, e in _entries(data, "whitelist"):
        where = f"whitelist[{label!r}]"
        raw_ip = e.get("ip", label)
        try:
            if not isinstance(raw_ip, str):
                raise ValueError
            ip = normalize_key(raw_ip)[0]  # an address or a network
        except ValueError:
            raise _bad(where, f"invalid IP address: {raw_ip!r}") from None
        source = _text(e, "source", where, "manual")
        if source not in WHITELIST_SOURCES:
            raise _bad(f"{where}.source", f"expected one of {', '.join(WHITELIST_SOURCES)}")
        expires = _expiry(e, where)
        if expires is not None and expires <= now:
            continue
        added = _time(e.get("addedAt", now), f"{where}.addedAt")
        wl[ip] = WhitelistRecord(
            ip=ip,
            user_id=_text(e, "userId", where),
            domain=_text(e, "domain", where),
            added=added,
            expires=expires,
            last_seen=_time(e.get("lastSeen", added), f"{where}.lastSeen"),
            source=source,
        )
    pats = data.get("untrustedPatterns", [])
    if not isinstance(pats, list):
        raise _bad("untrustedPatterns", "expected a list of strings")
    for i, p in enumerate(pats):
        if not isinstance(p, str) or not p.strip() or len(p) > MAX_TEXT or CONTROL_CHARS.search(p):
            raise _bad(f"untrustedPatterns[{i}]", f"invalid pattern {p!r}")
    return list(bans.values()), list(wl.values()), list(dict.fromkeys(pats))
