"""security.crowdsec: keys, roles, validation, SECURITY_CROWDSEC_* overrides; the shapes
shared with the LAPI (durations, alerts, stream validation)."""

from __future__ import annotations

import msgspec
import pytest

from shared.config import ConfigError, config_from_dict, effective_config_json
from shared.crowdsec import StreamDecision, alert_for, validate
from shared.durations import parse_go_duration


def cs(**keys: object) -> dict[str, object]:
    return {"security": {"crowdsec": keys}}


def test_defaults_are_off_and_roles_follow_the_keys() -> None:
    c = config_from_dict({}).security.crowdsec
    assert (c.enabled, c.push, c.pull, c.poll_interval, c.timeout) == (False, False, False, 10, 5)
    push = config_from_dict(
        cs(enabled=True, lapi_url="http://127.0.0.1:8080", machine_id="m", password="p")
    ).security.crowdsec
    assert push.push and not push.pull
    pull = config_from_dict(
        cs(enabled=True, lapi_url="https://lapi:8080/", bouncer_api_key="k", poll_interval="1s")
    ).security.crowdsec
    assert pull.pull and not pull.push and pull.poll_interval == 1.0


def test_enabled_without_credentials_names_the_keys() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(cs(enabled=True, lapi_url="http://127.0.0.1:8080"))
    text = str(err.value)
    for key in ("machine_id", "password", "bouncer_api_key"):
        assert f"security.crowdsec.{key}" in text


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"lapi_url": "ftp://lapi"}, "security.crowdsec.lapi_url"),
        ({"lapi_url": "http://"}, "security.crowdsec.lapi_url"),
        ({"enabled": True, "bouncer_api_key": "k"}, "security.crowdsec.lapi_url"),
        ({"machine_id": "m"}, "security.crowdsec.password"),
        ({"poll_interval": "0s"}, "security.crowdsec.poll_interval"),
        ({"timeout": "soon"}, "security.crowdsec.timeout"),
        ({"origins": ["cscli,crowdsec"]}, "security.crowdsec.origins[0]"),
        ({"scenarios_containing": [""]}, "security.crowdsec.scenarios_containing[0]"),
        ({"bouncer_api_key": "k\n"}, "security.crowdsec.bouncer_api_key"),
        ({"enabled": "yes"}, "security.crowdsec.enabled"),
        ({"pull_interval": "1s"}, "security.crowdsec.pull_interval"),
    ],
)
def test_bad_values_are_errors_naming_the_key(keys: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(cs(**keys))
    assert named in str(err.value)


def test_environment_overrides() -> None:
    env = {
        "SECURITY_CROWDSEC_ENABLED": "true",
        "SECURITY_CROWDSEC_LAPI_URL": "http://10.0.0.5:8080",
        "SECURITY_CROWDSEC_MACHINE_ID": "node-1",
        "SECURITY_CROWDSEC_PASSWORD": "s3cret-pass",
        "SECURITY_CROWDSEC_BOUNCER_API_KEY": "bouncer-key",
        "SECURITY_CROWDSEC_POLL_INTERVAL": "2s",
        "SECURITY_CROWDSEC_ORIGINS": '["crowdsec","cscli"]',
        "SECURITY_CROWDSEC_SCENARIOS_CONTAINING": '["ssh"]',
        "SECURITY_CROWDSEC_SCENARIOS_NOT_CONTAINING": '["http"]',
        "SECURITY_CROWDSEC_PUSH_SIMULATED": "true",
        "SECURITY_CROWDSEC_TIMEOUT": "750ms",
    }
    c = config_from_dict({}, env=env)
    s = c.security.crowdsec
    assert s.push and s.pull and s.lapi_url == "http://10.0.0.5:8080"
    assert (s.poll_interval, s.timeout, s.push_simulated) == (2.0, 0.75, True)
    assert s.origins == ["crowdsec", "cscli"] and s.scenarios_not_containing == ["http"]
    shown = effective_config_json(c)
    assert "s3cret-pass" not in shown and "bouncer-key" not in shown
    with pytest.raises(ConfigError) as err:
        config_from_dict({}, env={"SECURITY_CROWDSEC_LAPI_URL": "lapi:8080"})
    assert "SECURITY_CROWDSEC_LAPI_URL" in str(err.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("59m59.77s", 3599.77),
        ("4h", 14400.0),
        ("-1.5s", -1.5),
        ("-3h59m58.9s", -14398.9),
        ("250ms", 0.25),
        ("1h0m0s", 3600.0),
        ("0", 0.0),
        ("87600h", 315360000.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "5", "1x", "h", "--1s", "1s 2s", "1e9h", "7d", "9" * 400 + "s"]
)
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_go_duration_days_only_when_asked() -> None:
    assert parse_go_duration("1d12h", days=True) == 129600.0


def test_stream_validation_keeps_bans_on_ip_and_range_only() -> None:
    def d(**kw: str | int) -> StreamDecision:
        base = StreamDecision(id=7, origin="cscli", type="ban", scope="Ip",
                              value="203.0.113.5", duration="1h", scenario="s")
        return msgspec.structs.replace(base, **kw)

    ok = validate(d(), deleted=False)
    assert ok is not None and ok.value == "203.0.113.5" and ok.seconds == 3600
    v6 = validate(d(scope="Range", value="2001:DB8::/64"), deleted=False)
    assert v6 is not None and v6.value == "2001:db8::/64"
    host = validate(d(value="203.0.113.5/32", scope="range"), deleted=False)
    assert host is not None and host.value == "203.0.113.5"
    assert validate(d(duration="-2s"), deleted=True) is not None
    for bad in (
        d(type="captcha"),
        d(scope="Country", value="FR"),
        d(value="not-an-ip"),
        d(value="203.0.113.5; rm -rf /"),
        d(duration="-2s"),
        d(duration="soon"),
        d(duration="9" * 80 + "s"),  # parseable, but over MAX_DURATION_TEXT
        d(id=0),
    ):
        assert validate(bad, deleted=False) is None


def test_alert_shape() -> None:
    a = alert_for("2001:db8::/64", "failed auth!", "bad\nreason", 1_700_000_000.0, None, 0)
    assert a["scenario"] == "fsguard/failed_auth_"
    assert a["source"] == {"scope": "Range", "value": "2001:db8::/64", "range": "2001:db8::/64"}
    assert a["message"] == "bad?reason" and a["events_count"] == 1
    dec = a["decisions"][0]
    assert dec["duration"] == "87600h" and dec["origin"] == "crowdsec" and dec["type"] == "ban"
    b = alert_for("203.0.113.9", "failed_auth", "r", 100.0, 700.4, 5)
    assert b["decisions"][0]["duration"] == "601s" and b["start_at"] == "1970-01-01T00:01:40Z"
