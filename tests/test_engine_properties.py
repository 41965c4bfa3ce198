"""Hypothesis properties of the engine: trusted sources are never banned, the failed-auth
window bans exactly when N failures fit in the window, and state stays under its caps."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.config import Config
from shared.iputil import NetworkSet, parse_ip
from shared.messages import ListChange
from tests import sofia_events as ev
from tests.engine_harness import Harness, cfg

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TRUSTED_IPS = ["127.0.0.1", "10.0.0.5", "192.168.7.7", "::ffff:10.1.1.1", "2001:db8:ffff::5"]
OTHER_IPS = ["198.51.100.1", "198.51.100.2", "2001:db8:ffff:1::9", "203.0.113.9"]

event_kinds = st.sampled_from(["pre", "attempt", "fail", "reg", "wcs", "call", "toll"])
steps = st.lists(
    st.tuples(
        event_kinds,
        st.sampled_from(TRUSTED_IPS + OTHER_IPS),
        st.sampled_from(["1000", "1001", "9876", "unknown", ""]),
        st.sampled_from(ev.SCANNER_UAS + ev.PHONE_UAS),
        st.floats(min_value=0, max_value=30),
    ),
    max_size=120,
)


def _body(kind: str, ip: str, user: str, ua: str, n: int) -> bytes:
    if kind == "pre":
        return ev.pre_register(ip, user=user, ua=ua)
    if kind == "attempt":
        return ev.attempt(ip, user=user, ua=ua)
    if kind == "fail":
        return ev.failure(ip, user=user, ua=ua, to_host="evil.example")
    if kind == "reg":
        return ev.register(ip, user=user, ua=ua)
    if kind == "wcs":
        return ev.wrong_call_state(ip, user=user)
    if kind == "call":
        return ev.channel_create(ip, uuid=f"{ip}|{n}", ua=ua, from_host="x.bad.example")
    return ev.channel_create(
        ip, uuid=f"{ip}|{n}", ua=ua, context="public", destination="011", authorized=None
    )


@SETTINGS
@given(steps=steps, prefix=st.sampled_from([48, 64, 128]), manual=st.booleans())
def test_trusted_sources_are_never_banned(
    steps: list[tuple[str, str, str, str, float]], prefix: int, manual: bool
) -> None:
    config = Config()
    config.security.trusted_networks = [*config.security.trusted_networks, "2001:db8:ffff::/64"]
    config.security.untrusted_networks = ["evil.example", "*.bad.example", "10.0.0.0/8"]
    config.security.ipv6_ban_prefix = prefix
    config.security.rate_limit.call_rate_limit = 3
    config.security.rate_limit.registration_limit = 3
    config.security.max_failed_attempts = 2
    h = Harness(config)
    trusted = NetworkSet(config.security.trusted_networks)
    if manual:  # a confused firewall broadcast must not change anything either
        h.engine.on_list_change(ListChange(list="blacklist", op="remove", ip="10.0.0.5"))
    for n, (kind, ip, user, ua, gap) in enumerate(steps):
        h.feed(_body(kind, ip, user, ua, n), advance=gap)
        if n % 7 == 0:
            h.engine.tick()
    for ban in h.bans:
        if "/" in ban.ip:
            base = ban.ip.split("/")[0]
            assert not trusted.contains(parse_ip(base)), ban
            net = ipaddress.ip_network(ban.ip)
            assert not any(
                net.overlaps(ipaddress.ip_network(t)) for t in trusted.cidrs if ":" in t
            ), ban
        else:
            assert not trusted.contains(parse_ip(ban.ip)), ban
    for kill in h.kills:
        assert not trusted.contains(parse_ip(kill.uuid.split("|")[0])), kill


@SETTINGS
@given(
    limit=st.integers(min_value=1, max_value=8),
    window=st.floats(min_value=1, max_value=100),
    gaps=st.lists(st.floats(min_value=0, max_value=60), min_size=1, max_size=60),
)
def test_failed_auth_bans_exactly_when_n_failures_fit_in_the_window(
    limit: int, window: float, gaps: list[float]
) -> None:
    config = cfg(max_failed_attempts=limit, failed_attempts_window=window)
    config.security.enumeration.enabled = False
    h = Harness(config)
    times: list[float] = []
    first_crossing = None
    for i, gap in enumerate(gaps):
        h.advance(gap)
        times.append(h.clock.now)
        # the oldest of the last `limit` failures is inside the window ending now
        if first_crossing is None and i + 1 >= limit and times[i + 1 - limit] > times[i] - window:
            first_crossing = i
        out = h.feed(ev.failure("198.51.100.50"))
        assert bool(out) is (i == first_crossing), (i, first_crossing, times)
    assert len(h.bans) == (first_crossing is not None)


@SETTINGS
@given(
    cap=st.integers(min_value=1, max_value=40),
    events=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=200),
            st.integers(min_value=0, max_value=100),
            st.sampled_from(["pre", "fail", "wcs", "call", "reg"]),
        ),
        max_size=300,
    ),
)
def test_state_stays_under_its_caps(cap: int, events: list[tuple[int, int, str]]) -> None:
    config = Config()
    config.workers.max_tracked_ips = cap
    config.security.max_failed_attempts = 1000
    config.security.enumeration.enabled = False
    h = Harness(config)
    for n, (host, user, kind) in enumerate(events):
        ip = f"198.51.{host // 100}.{host % 100 + 1}"
        h.feed(_body(kind, ip, f"u{user}", "Zoiper", n), advance=0.5)
        stats = h.engine.stats()
        assert stats["tracked_ips"] <= cap
        assert stats["ban_records"] <= cap
        assert stats["whitelisted"] <= cap
    for failed in h.engine.failed_snapshot().values():
        assert len(failed.userIds or []) <= 32
    for rate in h.engine.rate_snapshot("registrations").values():
        assert len(rate.userIds or []) <= 32
