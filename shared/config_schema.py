"""fsguard configuration schema: one msgspec Struct per JSON object of the config file.

The JSON keys are the Go program's (freeswitch-security) plus fsguard's own. Attribute
names equal JSON keys. Durations are float seconds and ports int here; the loader
(shared/config.py) turns "5m"-style strings and "8088"-style ports into those.
"""

from __future__ import annotations

import os

import msgspec

DEFAULT_TRUSTED_NETWORKS = [
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
]  # fmt: skip

DEFAULT_SCANNER_USER_AGENTS = [
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipsak",
    "VaxSIPUserAgent",
    "pplsip",
    "iWar",
    "sundayddr",
    "SIPBomber",
    "smap",
]


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8088
    log_requests: bool = True
    log_responses: bool = False  # deprecated: unused by the Go program too
    pprof_enabled: bool = False  # deprecated: Go-only
    pprof_addr: str = "127.0.0.1:6060"  # deprecated: Go-only
    api_token: str = ""
    api_token_file: str = ""
    protect_reads: bool = False


class FreeswitchConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    default_domain: str = "example.com"


class CacheConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    security_ttl: float = 5.0
    cleanup_interval: float = 300.0


class ChanDaemonConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Unlike the Go program: off by default, no third-party URL by default.
    enabled: bool = False
    report_url: str = ""
    blocker_url: str = ""
    service_name: str = "freeswitch-security"
    report_timeout: float = 5.0
    allowed_api_ips: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1", "::1"])


class RateLimitConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    call_rate_limit: int = 20
    call_rate_interval: float = 60.0
    registration_limit: int = 10
    registration_window: float = 60.0
    auto_block_on_exceed: bool = True
    block_duration: float = 900.0
    whitelist_bypass: bool = True
    cleanup_interval: float = 300.0


class EnumerationConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    max_distinct_users: int = 5
    window: float = 60.0


class TollFraudConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    watch_profiles: list[str] = msgspec.field(default_factory=lambda: ["external"])
    watch_contexts: list[str] = msgspec.field(default_factory=lambda: ["public"])
    deny_prefixes: list[str] = msgspec.field(default_factory=lambda: ["00", "011", "+"])


class RecidiveConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    window: float = 86400.0
    factor: float = 4.0
    max_duration: float = 7 * 86400.0  # 0 = permanent


class ExtensionScanConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Calls from one source ending in "no such number" causes (issue 12)."""

    max_failed_calls: int = 10
    window: float = 60.0
    hangup_causes: list[str] = msgspec.field(
        default_factory=lambda: [
            "NO_ROUTE_DESTINATION",
            "UNALLOCATED_NUMBER",
            "USER_NOT_REGISTERED",
        ]
    )


class BareIpConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Requests to an IP literal instead of a SIP domain (the rule is off by default)."""

    allowed_hosts: list[str] = msgspec.field(default_factory=list)  # IPs/CIDRs that are fine


RULE_MODES: tuple[str, ...] = ("ban", "simulate", "off")


class RuleMode(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    mode: str = "ban"  # ban | simulate | off


def _off() -> RuleMode:
    return RuleMode(mode="off")


class RulesConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`security.rules.<rule>.mode`; the field names are the BanDecision.rule names."""

    failed_auth: RuleMode = msgspec.field(default_factory=RuleMode)
    user_enumeration: RuleMode = msgspec.field(default_factory=RuleMode)
    registration_rate: RuleMode = msgspec.field(default_factory=RuleMode)
    call_rate: RuleMode = msgspec.field(default_factory=RuleMode)
    wrong_call_state: RuleMode = msgspec.field(default_factory=RuleMode)
    untrusted_domain: RuleMode = msgspec.field(default_factory=RuleMode)
    untrusted_network: RuleMode = msgspec.field(default_factory=RuleMode)
    scanner_user_agent: RuleMode = msgspec.field(default_factory=RuleMode)
    toll_fraud: RuleMode = msgspec.field(default_factory=RuleMode)
    extension_scan: RuleMode = msgspec.field(default_factory=RuleMode)
    bare_ip: RuleMode = msgspec.field(default_factory=_off)

    def mode_of(self, rule: str) -> str:
        entry = getattr(self, rule, None)
        return entry.mode if isinstance(entry, RuleMode) else "ban"


class CrowdsecConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """CrowdSec Local API: push local bans (watcher) and/or pull the fleet's (bouncer)."""

    enabled: bool = False
    lapi_url: str = ""
    machine_id: str = ""
    password: str = ""
    bouncer_api_key: str = ""
    poll_interval: float = 10.0
    origins: list[str] = msgspec.field(default_factory=list)
    scenarios_containing: list[str] = msgspec.field(default_factory=list)
    scenarios_not_containing: list[str] = msgspec.field(default_factory=list)
    push_simulated: bool = False
    timeout: float = 5.0

    @property
    def push(self) -> bool:
        """Watcher credentials set: local bans are pushed."""
        return self.enabled and bool(self.machine_id and self.password)

    @property
    def pull(self) -> bool:
        """Bouncer key set: the fleet's decisions are pulled and enforced."""
        return self.enabled and bool(self.bouncer_api_key)


class SecurityConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    esl_host: str = "127.0.0.1"
    esl_port: int = 8021
    esl_password: str = "ClueCon"
    esl_allowed_commands: list[str] = msgspec.field(
        default_factory=lambda: ["status", "uptime", "version"]
    )
    max_failed_attempts: int = 5
    failed_attempts_window: float = 600.0
    auto_block_enabled: bool = True
    block_duration: float = 3600.0
    whitelist_enabled: bool = True  # deprecated: no effect in the Go program
    whitelist_ttl: float = 86400.0
    trusted_networks: list[str] = msgspec.field(
        default_factory=lambda: list(DEFAULT_TRUSTED_NETWORKS)
    )
    untrusted_networks: list[str] = msgspec.field(default_factory=list)
    iptables_chain: str = "INPUT"
    ipset_name: str = "freeswitch-security"
    firewall_backend: str = "ipset"  # "ipset" (ipset + iptables, as Go) or "nftables"
    nftables_table: str = "fsguard"  # the nftables backend's own `inet` table
    dry_run: bool = False
    auto_whitelist_on_success: bool = True
    esl_log_level: str = "info"
    reconnect_backoff: float = 5.0
    max_wrong_call_states: int = 5
    wrong_call_state_window: float = 600.0
    scanner_user_agents: list[str] = msgspec.field(
        default_factory=lambda: list(DEFAULT_SCANNER_USER_AGENTS)
    )
    ipv6_ban_prefix: int = 128
    keep_foreign_entries: bool = False  # reconcile keeps kernel entries with no record
    drift_check_interval: float = 60.0  # seconds between kernel <-> store drift checks
    # A clean stop keeps the sets and DROP rules (bans stay enforced while fsguard restarts);
    # true removes exactly what fsguard created, as `fsguard teardown` does.
    remove_rules_on_stop: bool = False
    chandaemon: ChanDaemonConfig = msgspec.field(default_factory=ChanDaemonConfig)
    rate_limit: RateLimitConfig = msgspec.field(default_factory=RateLimitConfig)
    enumeration: EnumerationConfig = msgspec.field(default_factory=EnumerationConfig)
    toll_fraud: TollFraudConfig = msgspec.field(default_factory=TollFraudConfig)
    recidive: RecidiveConfig = msgspec.field(default_factory=RecidiveConfig)
    crowdsec: CrowdsecConfig = msgspec.field(default_factory=CrowdsecConfig)
    # issue 12: protected sources, ban budget, new rules, rule modes
    max_bans_per_minute: int = 60  # more automatic bans in a minute: alert metric + log
    gateway_refresh_interval: float = 300.0  # `sofia xmlstatus gateway` period
    extension_scan: ExtensionScanConfig = msgspec.field(default_factory=ExtensionScanConfig)
    bare_ip: BareIpConfig = msgspec.field(default_factory=BareIpConfig)
    rules: RulesConfig = msgspec.field(default_factory=RulesConfig)


class PathsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    runtime_dir: str = "/run/fsguard"
    state_dir: str = "/var/lib/fsguard"


class WorkersConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    count: int = 0  # 0 = CPU count clamped to 2..8
    max_tracked_ips: int = 200_000
    queue_size: int = 8192  # per-worker ZeroMQ high-water mark, in messages
    queue_bytes: int = 64 * 1024 * 1024  # per-worker bound in bytes (a message: <= 256 KiB)


class LoggingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    format: str = "auto"  # "auto" (human on a terminal, else JSON), "json" or "human"
    level: str = "info"
    audit_file: str = ""  # "" = <state_dir>/audit.log
    audit_max_bytes: int = 100 * 1024 * 1024  # audit.log(+.1) and audit.db each; 0 = no limit
    audit_max_age: float = 90 * 86400.0  # seconds ("90d"); 0 = no limit


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    freeswitch: FreeswitchConfig = msgspec.field(default_factory=FreeswitchConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    paths: PathsConfig = msgspec.field(default_factory=PathsConfig)
    workers: WorkersConfig = msgspec.field(default_factory=WorkersConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)


def worker_count(config: Config) -> int:
    """Configured worker count; 0 means the CPU count clamped to 2..8."""
    if config.workers.count > 0:
        return config.workers.count
    return max(2, min(8, os.cpu_count() or 2))
