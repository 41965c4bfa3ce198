"""Durable firewall state in SQLite: bans (the Go "blacklist"), whitelist, untrusted
patterns, recidive history, the chanDaemon outbox and processed decision ids.

One process owns the file (the firewall): an exclusive flock on `<path>.lock` refuses a
second owner. The connection runs in autocommit mode and every write is one explicit
`BEGIN IMMEDIATE … COMMIT`, so a batch is all or nothing.

Durability: WAL with synchronous=FULL. WAL+NORMAL survives a process crash but may lose
the last commits on power loss; FULL fsyncs the WAL at each commit, so anything a caller
was told is stored survives power loss too (DESIGN invariant 5). The cost is one fsync
per transaction, which batching (add_bans, enqueue_many, settle) amortises.

Opening never starts silently from scratch: a corrupted file, a foreign SQLite file, an
unwritable location or a schema newer than this code raise StoreError, and the caller
exits non-zero.
"""

from __future__ import annotations

from .store_bans import BanTables
from .store_db import StoreDb
from .store_export import ExportImport
from .store_lists import ListTables
from .store_outbox import OutboxTable
from .store_records import (
    BAN_SOURCES,
    DB_FILENAME,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    PATTERN_SOURCES,
    WHITELIST_SOURCES,
    BanRecord,
    ImportDataError,
    OutboxItem,
    StoreError,
    WhitelistRecord,
    default_path,
    normalize_key,
)
from .store_schema import MIGRATIONS, SCHEMA_VERSION

__all__ = [
    "BAN_SOURCES",
    "DB_FILENAME",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "MIGRATIONS",
    "PATTERN_SOURCES",
    "SCHEMA_VERSION",
    "WHITELIST_SOURCES",
    "BanRecord",
    "ImportDataError",
    "OutboxItem",
    "Store",
    "StoreDb",
    "StoreError",
    "WhitelistRecord",
    "default_path",
    "normalize_key",
]


class Store(BanTables, ListTables, OutboxTable, ExportImport):
    """SQLite state owned by one process; every method is thread-safe (one lock).

    Modules: store_records (records, errors, keys), store_schema (migrations, rows),
    store_db (file, lock, transactions), store_bans, store_lists, store_outbox,
    store_export (one module per table group).
    """
