"""fsguard's CrowdSec fleet connector: LAPI watcher (push) and bouncer (pull)."""
