"""The configured kernel backend (`security.firewall_backend`): the only place that
knows both; everything else holds a backend.KernelBackend."""

from __future__ import annotations

import math

from shared.config import Config

from .backend import BackendOptions, KernelBackend
from .kernel import KernelFirewall
from .nft_backend import NftBackend


def make_backend(config: Config) -> KernelBackend:
    sec = config.security
    options: BackendOptions = {
        "default_timeout": max(0, math.ceil(sec.block_duration)),
        "dry_run": sec.dry_run,
        "ipv6_prefix": sec.ipv6_ban_prefix,
    }
    if sec.firewall_backend.lower() == "nftables":
        return NftBackend(sec.nftables_table, sec.ipset_name, **options)
    return KernelFirewall(sec.ipset_name, sec.iptables_chain, **options)
