"""The Go service's response keys, which fsguard's API answers exactly (docs/api.md);
fsguard's additive fields are named where a test checks them."""

from __future__ import annotations

GO_ESL_KEYS = {
    "connected",
    "host",
    "port",
    "connectionAttempts",
    "connectionErrors",
    "eventsProcessed",
    "eventsQueued",
    "eventsDropped",
    "logLevel",
    "workerCount",
    "queueLength",
    "queueCapacity",
}
GO_STATUS_KEYS = {
    "enabled",
    "autoBlock",
    "whitelistCount",
    "blacklistCount",
    "eslConnected",
    "eslHost",
    "eslPort",
}
GO_BLACKLIST_ENTRY_KEYS = {"ip", "addedAt", "expiresAt", "reason", "failCount", "permanent"}
GO_IPTABLES_KEYS = {"chain", "ipset", "blockedIps", "count"}
