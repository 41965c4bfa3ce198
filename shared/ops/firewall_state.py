"""Request and reply Structs of the firewall's durable-state ops (reconcile, drift check,
the workers' list snapshot, export/import) and of the CrowdSec fleet's ops (outbox,
decision stream)."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.crowdsec import RemoteDecision


class ReconcileResult(msgspec.Struct, kw_only=True):
    """What one kernel <-> store reconcile (or drift check) found and repaired."""

    stored: int = 0  # active bans in the store
    kernel_before: int = 0  # members found in the kernel sets
    added: int = 0  # re-added from the store
    retimed: int = 0  # present with a wrong timeout: re-armed
    removed_foreign: int = 0  # kernel entries without a record, removed
    kept_foreign: int = 0  # ... or kept (keep_foreign_entries)
    adopted: int = 0  # kernel entries recorded in an empty store (never "no bans")
    dropped_rows: int = 0  # rows for trusted/whitelisted/invalid targets, deleted
    migrated: list[str] = msgspec.field(default_factory=list)  # sets migrated
    errors: list[str] = msgspec.field(default_factory=list)
    seconds: float = 0.0

    def changed(self) -> bool:
        return bool(
            self.added or self.retimed or self.removed_foreign or self.dropped_rows
            or self.migrated or self.adopted
        )  # fmt: skip

    def repaired(self) -> int:
        return self.added + self.retimed + self.removed_foreign

    def summary(self) -> str:
        return (
            f"stored={self.stored} kernel={self.kernel_before} added={self.added} "
            f"retimed={self.retimed} removed_foreign={self.removed_foreign} "
            f"kept_foreign={self.kept_foreign} adopted={self.adopted} "
            f"dropped_rows={self.dropped_rows} "
            f"migrated={','.join(self.migrated) or '-'} errors={len(self.errors)} "
            f"in {self.seconds:.2f}s"
        )


class ReconcileRequest(msgspec.Struct, frozen=True, kw_only=True):
    from_empty: bool = False  # an empty store is deliberate: remove the kernel entries


class SnapshotRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A worker's shard (both or neither): only the bans it owns, plus every prefix ban."""

    shard: int | None = None
    shards: int | None = None


class ListsSnapshot(msgspec.Struct, kw_only=True):
    """Everything a worker mirrors; entries are [key, expires (wall time, 0 permanent)]."""

    pid: int
    whitelist: list[tuple[str, float]]
    untrusted: list[str]
    blacklist: list[tuple[str, float]]


class ImportRequest(msgspec.Struct, frozen=True, kw_only=True):
    # An export document (`bans_export`, a file an operator edits): free-form here, the
    # store's import validates every entry and names the first bad one (400).
    data: Any


class ImportResult(msgspec.Struct, kw_only=True):
    imported: int
    reconcile: ReconcileResult | None = None  # None: auto_block disabled, kernel untouched


# --- CrowdSec fleet (the connector, fsguard_fleet, is the client) ---------------------------


class OutboxDueRequest(msgspec.Struct, frozen=True, kw_only=True):
    limit: int = 500  # 1..5000


class OutboxDue(msgspec.Struct, kw_only=True):
    """The oldest outbox items in order, [id, kind ("alert"|"delete"), key, payload]."""

    items: list[tuple[int, str, str, str]]
    depth: int


class OutboxSettleRequest(msgspec.Struct, frozen=True, kw_only=True):
    sent: list[int] = msgspec.field(default_factory=list)  # done (or refused for good)
    failed: list[tuple[int, str]] = msgspec.field(default_factory=list)  # [id, error]: retried


class OutboxDepth(msgspec.Struct, kw_only=True):
    depth: int


class ApplyRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One stream answer (or one chunk of it) from the LAPI."""

    new: list[RemoteDecision] = msgspec.field(default_factory=list)
    deleted: list[RemoteDecision] = msgspec.field(default_factory=list)
    startup: bool = False  # the whole truth: remote rows not listed are deleted
    present: list[int] | None = None  # a chunked startup answer's ids
    stream_errors: int = 0  # the connector's failed pulls so far
    skipped: int = 0  # decisions the connector skipped (invalid, unsupported scope)


class CrowdsecApply(msgspec.Struct, kw_only=True):
    """Reply of "crowdsec_apply": what one stream answer did."""

    at: float
    applied: int
    removed: int
    refused: int
    invalid: int
    new: int
    deleted: int
    seconds: float
