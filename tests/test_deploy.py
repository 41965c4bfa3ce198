"""Deployment artefacts in deploy/: systemd units, installer, container, monitoring.

Tools are used when the machine has them (Debian packages): systemd (systemd-analyze),
shellcheck, prometheus (promtool), docker-compose or docker with the compose plugin,
util-linux (setpriv, unshare), ipset and iptables. Every test that needs one skips with
the reason when it is missing; the structural checks always run.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
INSTALL_SH = DEPLOY / "install.sh"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "fsguard-dashboard.json"

BIN = "/usr/local/bin/fsguard"
CONFIG = "/etc/fsguard/config.json"
ROLES = ("firewall", "supervisor", "api", "fleet")
UNPRIVILEGED = ("supervisor", "api", "fleet")
MAX_EXPOSURE = 3.0

METRICS = {
    "fsguard_esl_connected",
    "fsguard_esl_reconnects_total",
    "fsguard_esl_malformed_frames_total",
    "fsguard_supervisor_task_failures_total",
    "fsguard_events_total",
    "fsguard_events_dropped_total",
    "fsguard_queue_depth",
    "fsguard_decisions_total",
    "fsguard_bans_active",
    "fsguard_ban_latency_seconds_bucket",
    "fsguard_ban_latency_seconds_sum",
    "fsguard_ban_latency_seconds_count",
    "fsguard_firewall_batch_seconds",
    "fsguard_firewall_kernel_full_total",
    "fsguard_firewall_pending_bans",
    "fsguard_firewall_drift_repaired_total",
    "fsguard_firewall_last_drift",
    "fsguard_firewall_store_errors_total",
    "fsguard_firewall_store_backlog",
    "fsguard_firewall_store_degraded",
    "fsguard_tracked_ips",
    "fsguard_evictions_total",
    "fsguard_process_restarts_total",
    "fsguard_reports_total",
    "fsguard_api_requests_total",
    "fsguard_crowdsec_sync_lag_seconds",
    "fsguard_crowdsec_last_sync_timestamp_seconds",
    "fsguard_crowdsec_pull_enabled",
    "fsguard_crowdsec_push_queue_depth",
    "fsguard_crowdsec_push_failures_total",
    "fsguard_bans_active_by_origin",
    "fsguard_ban_budget_exceeded_total",
    "fsguard_esl_hardening_warning",
}


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        pytest.skip(f"{name} is not installed on this machine")
    return path


def _run(
    *argv: str, timeout: float = 60, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


# ---------------------------------------------------------------------------------- units


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd unit syntax: sections of key=value, keys may repeat (order kept)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: key outside a section: {line}"
        assert "=" in line, f"{path.name}: not key=value: {line}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit(role: str) -> dict[str, dict[str, list[str]]]:
    return parse_unit(SYSTEMD / f"fsguard-{role}.service")


def words(section: dict[str, list[str]], key: str) -> set[str]:
    return {w for value in section.get(key, []) for w in value.split()}


def last(section: dict[str, list[str]], key: str) -> str | None:
    values = section.get(key)
    return values[-1] if values else None


UNIT_FILES = ["fsguard.target"] + [f"fsguard-{r}.service" for r in ROLES]


def test_unit_files_present() -> None:
    assert sorted(p.name for p in SYSTEMD.iterdir()) == sorted(UNIT_FILES)


def test_target_groups_the_three_roles() -> None:
    target = parse_unit(SYSTEMD / "fsguard.target")
    assert words(target["Unit"], "Wants") >= {f"fsguard-{r}.service" for r in ROLES}
    assert words(target["Install"], "WantedBy") == {"multi-user.target"}


KILL = "/bin/kill"


def test_reload_goes_to_the_supervisor_only() -> None:
    """`systemctl reload fsguard-supervisor` = SIGHUP to the supervisor, which reloads every
    process over the control sockets; the firewall and API ignore SIGHUP (issue 14 §3)."""
    assert unit("supervisor")["Service"]["ExecReload"] == [f"{KILL} -HUP $MAINPID"]
    for role in ("firewall", "api"):
        assert "ExecReload" not in unit(role)["Service"]


@pytest.mark.parametrize("role", ROLES)
def test_service_basics(role: str) -> None:
    u = unit(role)
    s = u["Service"]
    assert s["ExecStart"] == [f"{BIN} {role} --config {CONFIG}"]
    assert last(s, "Type") == "notify"
    assert last(s, "Restart") == "on-failure"
    assert "fsguard.target" in words(u["Unit"], "PartOf")
    assert words(u["Install"], "WantedBy") == {"fsguard.target"}
    assert last(s, "User") == "fsguard"
    assert last(s, "UMask") == "0027"
    # One runtime directory shared by every role: same name, mode, owner; never
    # removed when one unit stops (that would delete the other roles' sockets).
    assert last(s, "RuntimeDirectory") == "fsguard"
    assert last(s, "RuntimeDirectoryMode") == "0750"
    assert last(s, "RuntimeDirectoryPreserve") == "yes"


def test_install_paths_match_units() -> None:
    text = INSTALL_SH.read_text()
    # the defaults (FSGUARD_* overrides exist for the install tests only)
    bin_link = rf'^readonly BIN_LINK="\$\{{FSGUARD_BIN_LINK:-{re.escape(BIN)}\}}"$'
    assert re.search(bin_link, text, re.M)
    config_dir = r'^readonly CONFIG_DIR="\$\{FSGUARD_CONFIG_DIR:-/etc/fsguard\}"$'
    assert re.search(config_dir, text, re.M)
    assert re.search(r'^readonly PREFIX="\$\{FSGUARD_PREFIX:-/opt/fsguard\}"$', text, re.M)
    assert 'CONFIG="$CONFIG_DIR/config.json"' in text
    for name in UNIT_FILES:
        assert name in text, f"install.sh does not install {name}"


def test_ordering_firewall_supervisor_api() -> None:
    fw, sup, api, fleet = (unit(r)["Unit"] for r in ROLES)
    assert "fsguard-firewall.service" in words(fleet, "Wants")
    assert "fsguard-firewall.service" in words(fleet, "After")
    assert "fsguard-firewall.service" in words(sup, "Wants")
    assert "fsguard-firewall.service" in words(sup, "After")
    assert "fsguard-firewall.service" in words(api, "Wants")
    assert {"fsguard-firewall.service", "fsguard-supervisor.service"} <= words(api, "After")
    # No reverse edge that would make a cycle.
    assert not words(fw, "After") & {"fsguard-supervisor.service", "fsguard-api.service"}
    assert "fsguard-api.service" not in words(sup, "After")


def test_only_the_firewall_holds_capabilities() -> None:
    fw = unit("firewall")["Service"]
    assert words(fw, "CapabilityBoundingSet") == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert words(fw, "AmbientCapabilities") == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert "AF_NETLINK" in words(fw, "RestrictAddressFamilies")
    assert last(fw, "PrivateUsers") in (None, "no"), "capabilities in a user ns cannot ban"
    for role in UNPRIVILEGED:
        s = unit(role)["Service"]
        assert s["CapabilityBoundingSet"] == [""], role
        assert words(s, "AmbientCapabilities") == set(), role
        assert "CAP_" not in (SYSTEMD / f"fsguard-{role}.service").read_text().replace(
            "CapabilityBoundingSet=\n", ""
        ), role


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "RemoveIPC": "yes",
    "SystemCallArchitectures": "native",
}


@pytest.mark.parametrize("role", ROLES)
def test_hardening_directives(role: str) -> None:
    s = unit(role)["Service"]
    for key, value in HARDENING.items():
        assert last(s, key) == value, f"{role}: {key}={last(s, key)!r}, want {value!r}"
    assert s["SystemCallFilter"][0] == "@system-service"
    families = words(s, "RestrictAddressFamilies")
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= families
    if role in UNPRIVILEGED:
        assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_state_directory_only_where_state_is_written() -> None:
    assert last(unit("firewall")["Service"], "StateDirectory") == "fsguard"
    assert last(unit("supervisor")["Service"], "StateDirectory") == "fsguard"
    assert "StateDirectory" not in unit("api")["Service"]
    assert "StateDirectory" not in unit("fleet")["Service"]


def _verify_root(tmp_path: Path) -> Path:
    """A filesystem root for `systemd-analyze verify --root`: the host's system units,
    ours in /etc/systemd/system and an executable stand-in for /usr/local/bin/fsguard."""
    root = tmp_path / "root"
    host_units = Path("/usr/lib/systemd/system")
    if not host_units.is_dir():
        host_units = Path("/lib/systemd/system")
    if not (host_units / "sysinit.target").exists():
        pytest.skip("no systemd system units on this machine to verify against")
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for name in UNIT_FILES:
        shutil.copy(SYSTEMD / name, etc / name)
    fake = root / BIN.lstrip("/")
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    # ExecReload's /bin/kill: on the host (Debian: procps, or util-linux), stand-in here
    assert Path(KILL).exists(), f"{KILL} missing: ExecReload would fail"
    stand_in = root / KILL.lstrip("/")
    stand_in.parent.mkdir(parents=True, exist_ok=True)
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    return root


def _verify(root: Path) -> subprocess.CompletedProcess[str]:
    tool = _tool("systemd-analyze")
    files = [str(root / "etc/systemd/system" / n) for n in UNIT_FILES]
    return _run(
        tool,
        "verify",
        "--man=no",
        "--generators=no",
        f"--root={root}",
        *files,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    result = _verify(_verify_root(tmp_path))
    # verify exits 0 on unknown keys and bad values, it only prints them: both must be clean.
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert result.stdout.strip() == "", result.stdout


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("Type=notify", "Type=notifyy"),  # bad value: only a warning, rc 0
        ("Restart=on-failure", "Restrat=on-failure"),  # unknown key: only a warning
        (
            "After=fsguard-firewall.service",
            "Before=fsguard-api.service\nAfter=fsguard-firewall.service",
        ),
    ],
)
def test_systemd_analyze_verify_catches_mistakes(tmp_path: Path, old: str, new: str) -> None:
    root = _verify_root(tmp_path)
    path = root / "etc/systemd/system/fsguard-api.service"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    result = _verify(root)
    assert result.returncode != 0 or result.stderr.strip(), "broken unit passed verify"


def exposure(path: Path) -> float:
    tool = _tool("systemd-analyze")
    result = _run(tool, "security", "--offline=yes", "--no-pager", str(path))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, f"no exposure in systemd-analyze output:\n{result.stdout}\n{result.stderr}"
    return float(match.group(1))


@pytest.mark.parametrize("role", ROLES)
def test_systemd_analyze_security_exposure(role: str) -> None:
    # The firewall holds CAP_NET_ADMIN and cannot use PrivateUsers=; it still scores
    # well below the bound (deploy/README.md records the measured values).
    score = exposure(SYSTEMD / f"fsguard-{role}.service")
    assert score <= MAX_EXPOSURE, f"fsguard-{role}.service exposure {score} > {MAX_EXPOSURE}"


def test_security_scoring_can_fail(tmp_path: Path) -> None:
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/bin/true\n")
    assert exposure(bare) > MAX_EXPOSURE


# systemd 252 (Debian 12, the release the units target; its kernel 6.1 has no PR_SET_MDWE)
# implements MemoryDenyWriteExecute=yes as a seccomp filter (seccomp_memory_deny_write_execute
# in src/shared/seccomp-util.c): EPERM for mmap with PROT_WRITE|PROT_EXEC, for mprotect and
# pkey_mprotect adding PROT_EXEC, and for shmat with SHM_EXEC. The probe installs that same
# filter on itself, then does what fsguard's processes do.
MDWE_PROBE = textwrap.dedent(
    """
    import ctypes, mmap, platform, struct, sys
    ARCHES = {  # audit arch, mmap, mprotect, pkey_mprotect, shmat
        "x86_64": (0xC000003E, 9, 10, 329, 30),
        "aarch64": (0xC00000B7, 222, 226, 288, 196),
    }
    arch, sys_mmap, sys_mprotect, sys_pkey_mprotect, sys_shmat = ARCHES[platform.machine()]
    LD, JEQ, AND, RET = 0x20, 0x15, 0x54, 0x06
    ALLOW, EPERM = 0x7FFF0000, 0x00050001
    W, X, SHM_EXEC = 0x2, 0x4, 0o100000
    prog = [
        (LD, 0, 0, 4), (JEQ, 1, 0, arch), (RET, 0, 0, ALLOW),      # 0-2 other arch: allow
        (LD, 0, 0, 0),                                              # 3 syscall number
        (JEQ, 4, 0, sys_mmap), (JEQ, 6, 0, sys_mprotect),           # 4, 5 (jumps are
        (JEQ, 5, 0, sys_pkey_mprotect), (JEQ, 7, 0, sys_shmat),     # 6, 7  relative)
        (RET, 0, 0, ALLOW),                                         # 8
        (LD, 0, 0, 32), (AND, 0, 0, W | X), (JEQ, 7, 6, W | X),     # 9-11 mmap
        (LD, 0, 0, 32), (AND, 0, 0, X), (JEQ, 4, 3, X),             # 12-14 mprotect
        (LD, 0, 0, 32), (AND, 0, 0, SHM_EXEC), (JEQ, 1, 0, SHM_EXEC),  # 15-17 shmat
        (RET, 0, 0, ALLOW), (RET, 0, 0, EPERM),                     # 18, 19
    ]
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw)
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fprog = Fprog(len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:
        sys.exit(f"cannot install the seccomp filter: errno {ctypes.get_errno()}")
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError:
        pass
    else:
        sys.exit("W+X mapping was allowed: MDWE not in force")
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ)
    addr = ctypes.addressof(ctypes.c_char.from_buffer_copy(b"x"))
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    aligned = ctypes.c_void_p(addr & ~4095)
    if libc.mprotect(aligned, 4096, mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC) == 0:
        sys.exit("mprotect(PROT_EXEC) was allowed: MDWE not in force")
    import asyncio, sqlite3
    import msgspec, zmq, fastapi, uvicorn, prometheus_client, ipset_c
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH); push.bind(sys.argv[1])
    pull = ctx.socket(zmq.PULL); pull.connect(sys.argv[1])
    push.send(msgspec.msgpack.encode({"ok": 1}))
    assert msgspec.msgpack.decode(pull.recv()) == {"ok": 1}
    cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    assert cb(1) == 2
    assert sqlite3.connect(":memory:").execute("select 1").fetchone() == (1,)
    prometheus_client.generate_latest()
    print("ok")
    """
)


def test_python_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes: the interpreter and fsguard's native dependencies
    must not need writable+executable memory. The kernel's PR_SET_MDWE (Linux 6.3+)
    is not in Debian 12's kernel: the probe installs systemd's own seccomp filter instead."""
    try:
        import fastapi  # noqa: F401
        import zmq  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"fsguard dependencies not importable: {exc}")
    sock = f"ipc://{tmp_path}/mdwe.sock"
    result = _run(sys.executable, "-c", MDWE_PROBE, sock)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ------------------------------------------------- firewall capabilities as non-root

CAP_SCRIPT = textwrap.dedent(
    r"""
    set -u
    as_user() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
    with_caps() {
        setpriv --reuid=65534 --regid=65534 --clear-groups \
            --inh-caps="$CAPS" --ambient-caps="$CAPS" "$@"
    }
    if as_user ipset list -n >/dev/null 2>&1; then
        echo "FAIL: ipset works without capabilities"; exit 1
    fi
    with_caps ipset create fsg4 hash:ip family inet || exit 1
    with_caps ipset create fsg6 hash:net family inet6 || exit 1
    with_caps ipset add fsg4 192.0.2.7 || exit 1
    with_caps ipset add fsg6 2001:db8::/64 || exit 1
    with_caps ipset test fsg4 192.0.2.7 || exit 1
    with_caps ipset list -n || exit 1
    with_caps iptables -S >/dev/null || exit 1
    with_caps iptables -I INPUT -m set --match-set fsg4 src -j DROP || exit 1
    with_caps iptables -C INPUT -m set --match-set fsg4 src -j DROP || exit 1
    with_caps ip6tables -I INPUT -m set --match-set fsg6 src -j DROP || exit 1
    with_caps ip6tables -C INPUT -m set --match-set fsg6 src -j DROP || exit 1
    with_caps ipset del fsg4 192.0.2.7 || exit 1
    echo OK
    """
)


@pytest.mark.netns
def test_firewall_runs_unprivileged_with_ambient_capabilities() -> None:
    """The decision documented in deploy/README.md: user fsguard (here: nobody) with the
    firewall unit's AmbientCapabilities can drive ipset and iptables (incl. the set match)
    — checked in a private network namespace that disappears with the process."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace and switch users")
    unshare = _tool("unshare")
    _tool("setpriv")
    for name in ("ipset", "iptables", "ip6tables"):
        _tool(name)
    caps = sorted(words(unit("firewall")["Service"], "AmbientCapabilities"))
    cap_list = ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    env = {**os.environ, "CAPS": cap_list, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    probe = _run(unshare, "--net", "true")
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
    result = _run(unshare, "--net", "bash", "-c", CAP_SCRIPT, env=env)
    if "Kernel error" in result.stderr and "not supported" in result.stderr.lower():
        pytest.skip(f"kernel lacks ip_set support: {result.stderr.strip()}")
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), (
        result.stdout + result.stderr
    )


# ------------------------------------------------------------------------- install.sh


def test_install_sh_syntax() -> None:
    bash = _tool("bash")
    result = _run(bash, "-n", str(INSTALL_SH))
    assert result.returncode == 0, result.stderr
    assert os.access(INSTALL_SH, os.X_OK)


def test_install_sh_shellcheck() -> None:
    tool = _tool("shellcheck")
    result = _run(tool, "--severity=style", str(INSTALL_SH))
    assert result.returncode == 0, result.stdout + result.stderr


def test_install_sh_dry_run_changes_nothing_and_lists_the_actions() -> None:
    bash = _tool("bash")
    existed = {p: Path(p).exists() for p in ("/opt/fsguard", BIN, CONFIG)}
    # A Python every user can run (the service user must run the venv's interpreter).
    python = next((p for p in ("/usr/bin/python3", "/usr/bin/python3.11") if Path(p).exists()),
                  "python3")  # fmt: skip
    result = _run(bash, str(INSTALL_SH), "--dry-run", env={**os.environ, "PYTHON": python})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert {p: Path(p).exists() for p in existed} == existed, "--dry-run changed the system"
    assert (
        re.search(r"^\+ (groupadd --system fsguard)$", out, re.M) or "group fsguard exists" in out
    )
    assert re.search(r"^\+ useradd --system .* fsguard$", out, re.M) or "user fsguard exists" in out
    assert re.search(rf"pip .*install .*--no-deps .*--upgrade {re.escape(str(ROOT))}$", out, re.M)
    assert f"+ ln -sfn /opt/fsguard/venv/bin/fsguard {BIN}" in out
    for name in UNIT_FILES:
        assert f"/etc/systemd/system/{name}" in out
    if not Path(CONFIG).exists():
        assert re.search(
            rf"install -m 0640 -o root -g fsguard \S+config\.example\.json {CONFIG}", out
        )


def test_install_sh_rejects_unknown_arguments() -> None:
    result = _run(_tool("bash"), str(INSTALL_SH), "--bogus")
    assert result.returncode == 2
    assert "unknown argument" in result.stderr


# ------------------------------------------------------------------- Docker / compose


def _compose_cmd() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and _run(docker, "compose", "version").returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_file_validates(tmp_path: Path) -> None:
    cmd = _compose_cmd()
    if cmd is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    result = _run(*cmd, "-f", str(COMPOSE), "config", "-q")
    assert result.returncode == 0, result.stderr
    services = _run(*cmd, "-f", str(COMPOSE), "config", "--services")
    assert set(services.stdout.split()) == {"freeswitch", "fsguard", "prometheus", "crowdsec"}
    # The validator must be able to say no: a dangling network_mode service is rejected.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("service:freeswitch", "service:nowhere"))
    assert _run(*cmd, "-f", str(broken), "config", "-q").returncode != 0


def test_compose_file_content() -> None:
    text = COMPOSE.read_text()
    if importlib.util.find_spec("yaml") is not None:  # PyYAML is optional here
        import yaml

        doc = yaml.safe_load(text)
        services = doc["services"]
        assert set(services) == {"freeswitch", "fsguard", "prometheus", "crowdsec"}
        fsg = services["fsguard"]
        assert fsg["environment"]["SECURITY_CROWDSEC_LAPI_URL"] == "http://crowdsec:8080"
        assert services["crowdsec"]["environment"]["DISABLE_AGENT"] == "true"
        assert fsg["network_mode"] == "service:freeswitch"
        assert set(fsg["cap_add"]) == {"NET_ADMIN", "NET_RAW"}
        assert fsg["cap_drop"] == ["ALL"]
        assert fsg["command"][0] == "run"
        assert fsg["build"]["dockerfile"] == "deploy/Dockerfile"
        assert "fsguard" in services["freeswitch"]["networks"]["default"]["aliases"]
        assert "8088:8088/tcp" in services["freeswitch"]["ports"]
        assert any(str(p).startswith("5060:5060") for p in services["freeswitch"]["ports"])
        mounts = services["prometheus"]["volumes"]
        assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
        assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    else:
        # Without a YAML parser: the lines the design depends on, at service indentation.
        for pattern in (
            r"^  freeswitch:$",
            r"^  fsguard:$",
            r"^  prometheus:$",
            r'^    network_mode: "service:freeswitch"$',
            r"^    cap_add: \[NET_ADMIN, NET_RAW\]$",
            r'^      - "8088:8088/tcp"$',
            r"^      - \./prometheus/alerts\.yml:/etc/prometheus/alerts\.yml:ro$",
        ):
            assert re.search(pattern, text, re.M), pattern
        assert "\t" not in text


def test_dockerfile_structure() -> None:
    lines = [ln.strip() for ln in DOCKERFILE.read_text().splitlines()]
    stages = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(stages) >= 2, "multi-stage build expected"
    assert re.match(r"FROM python:3\.11-slim\S* AS runtime$", stages[-1])
    text = DOCKERFILE.read_text()
    runtime = text[text.index(stages[-1]) :]
    assert re.search(r"apt-get install [^\n]*\bipset\b[^\n]*\biptables\b", runtime)
    assert re.search(r"^USER fsguard$", runtime, re.M)
    assert re.search(r'^ENTRYPOINT \["fsguard"\]$', runtime, re.M)
    # Dependencies exactly as locked: the run-time subset of requirements.lock, hash-checked.
    assert "requirements.lock" in text and "runtime_lock.py subset" in text
    assert re.search(r"pip install [^\n]*--require-hashes --no-deps", text)
    assert re.search(r"pip install [^\n]*--no-deps --no-build-isolation \.", text)
    # Every local COPY source exists, and every package of pyproject.toml is copied.
    copied: set[str] = set()
    for ln in lines:
        if ln.startswith("COPY ") and "--from=" not in ln:
            *sources, _dest = ln.split()[1:]
            for src in sources:
                assert (ROOT / src).exists(), f"COPY source {src} missing"
                copied.add(src.rstrip("/"))
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # pyproject finds its packages (include patterns); sub-packages (fsguard_cli.demo_data)
    # travel with their top-level directory, so the top-level packages it matches count.
    include = meta["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {d.name for d in ROOT.iterdir() if (d / "__init__.py").exists()
                and any(fnmatch.fnmatchcase(d.name, pattern) for pattern in include)}
    assert {"shared", "fsguard_cli", "fsguard_firewall"} <= packages, packages
    assert packages <= copied, f"Dockerfile does not copy {set(packages) - copied}"
    assert meta["project"]["readme"] in copied


# ------------------------------------------------------------------------- monitoring

_PROMQL_FUNCTIONS = "sum min max avg count rate increase irate absent histogram_quantile time"
_PROMQL_KEYWORDS = "by without on ignoring and or unless bool offset"
_LABELS_AND_TEMPLATE = "le instance job worker rule family origin humanize value labels"
PROMQL_WORDS = {
    *_PROMQL_FUNCTIONS.split(" "),
    *_PROMQL_KEYWORDS.split(" "),
    *_LABELS_AND_TEMPLATE.split(" "),
}


def promql_names(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that are not functions, operators or labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+|ms|[smhdwy])?\b", "", expr)  # numbers, durations
    tokens = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {t for t in tokens if t not in PROMQL_WORDS}


def alert_exprs() -> dict[str, str]:
    """alert name -> expr, read from alerts.yml without a YAML library (block scalars ok)."""
    rules: dict[str, str] = {}
    lines = (PROM / "alerts.yml").read_text().splitlines()
    name = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*- alert: (\S+)$", line)
        if m:
            name = m.group(1)
        m = re.match(r"(\s*)expr: ?(.*)$", line)
        if m and name:
            indent, value = len(m.group(1)), m.group(2)
            if value in (">-", ">", "|", "|-"):
                block = []
                while i + 1 < len(lines) and (
                    not lines[i + 1].strip()
                    or len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent
                ):
                    i += 1
                    block.append(lines[i].strip())
                value = " ".join(b for b in block if b)
            rules[name] = value
        i += 1
    return rules


def test_alerts_cover_the_required_conditions() -> None:
    exprs = alert_exprs()
    assert exprs["FsguardESLDown"] == "fsguard_esl_connected == 0"
    assert "rate(fsguard_events_dropped_total[5m])" in exprs["FsguardEventsDropped"]
    assert "rate(fsguard_decisions_total[5m])" in exprs["FsguardBanRateSpike"]
    assert "rate(fsguard_decisions_total[1h]" in exprs["FsguardBanRateSpike"]
    assert "increase(fsguard_process_restarts_total[15m]) > 0" in exprs["FsguardProcessRestarts"]
    text = (PROM / "alerts.yml").read_text()
    esl = text[text.index("alert: FsguardESLDown") :]
    assert re.search(r"^\s+for: 1m$", esl.split("- alert:")[0], re.M)


def test_alerts_use_only_exported_metrics() -> None:
    exprs = alert_exprs()
    assert len(exprs) >= 4
    for name, expr in exprs.items():
        unknown = promql_names(expr) - METRICS
        assert not unknown, f"{name}: unknown names {unknown} in {expr!r}"


def test_metric_name_check_can_fail() -> None:
    assert promql_names('sum(rate(up{job="x"}[5m])) by (instance)') == {"up"}
    assert promql_names("fsguard_nope_total > 0") - METRICS == {"fsguard_nope_total"}


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_panels_and_metric_names() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = dashboard_exprs()
    for expr in exprs:
        unknown = promql_names(expr) - METRICS
        assert not unknown, f"unknown names {unknown} in {expr!r}"
    joined = "\n".join(exprs)
    assert "rate(fsguard_events_total" in joined
    assert re.search(r"sum by \(rule\) \(rate\(fsguard_decisions_total", joined)
    assert re.search(r"sum by \(family\) \(fsguard_bans_active", joined)
    assert re.search(
        r"histogram_quantile\(0\.\d+, sum by \(le\) \(rate\(fsguard_ban_latency_seconds_bucket",
        joined,
    )
    assert re.search(r"sum by \(worker\) \(rate\(fsguard_events_dropped_total", joined)


def test_prometheus_scrapes_fsguard() -> None:
    text = (PROM / "prometheus.yml").read_text()
    assert re.search(r"^\s+metrics_path: /metrics$", text, re.M)
    assert re.search(r'targets: \["fsguard:8088"\]', text)
    assert re.search(r"^rule_files:\n  - alerts\.yml$", text, re.M)


def test_promtool_check_config_and_rules() -> None:
    promtool = _tool("promtool")
    rules = _run(promtool, "check", "rules", str(PROM / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _run(promtool, "check", "config", str(PROM / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


ALERT_TESTS = """
  - interval: 1m
    input_series:
      - series: 'fsguard_esl_connected{{instance="a"}}'
        values: '1 1 0 0 0 0'
      - series: 'fsguard_events_dropped_total{{instance="a",worker="1"}}'
        values: '0 0 0 10 20 30'
      - series: 'fsguard_process_restarts_total{{instance="a"}}'
        values: '0 0 0 1 1 1'
    alert_rule_test:
      - eval_time: 2m
        alertname: FsguardESLDown
        exp_alerts: []
      - eval_time: 4m
        alertname: FsguardESLDown
        exp_alerts:
          - exp_labels: {{severity: critical, instance: a}}
      - eval_time: 2m
        alertname: FsguardEventsDropped
        exp_alerts: []
      - eval_time: 5m
        alertname: FsguardEventsDropped
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a, worker: "1"}}
      - eval_time: 2m
        alertname: FsguardProcessRestarts
        exp_alerts: []
      - eval_time: 5m
        alertname: FsguardProcessRestarts
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a}}
  - interval: 1m
    input_series:
      # One decision a minute for 2h, then 60 a minute.
      - series: 'fsguard_decisions_total{{instance="a",rule="brute_force"}}'
        values: '0+1x120 120+60x20'
    alert_rule_test:
      - eval_time: 119m
        alertname: FsguardBanRateSpike
        exp_alerts: []
      - eval_time: 128m
        alertname: FsguardBanRateSpike
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a}}
  - interval: 1m
    input_series:
      # synced every minute until 3m, then never again
      - series: 'fsguard_crowdsec_last_sync_timestamp_seconds{{instance="a"}}'
        values: '0 60 120 180 180 180 180 180 180 180 180 180 180 180 180 180 180 180'
      - series: 'fsguard_crowdsec_pull_enabled{{instance="a"}}'
        values: '1x17'
      - series: 'fsguard_crowdsec_push_failures_total{{instance="a",pid="9"}}'
        values: '0 0 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15'
      - series: 'fsguard_crowdsec_push_queue_depth{{instance="a"}}'
        values: '0 0 0 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3'
    alert_rule_test:
      - eval_time: 5m
        alertname: FsguardCrowdsecSyncLag
        exp_alerts: []
      - eval_time: 12m
        alertname: FsguardCrowdsecSyncLag
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a}}
      - eval_time: 8m
        alertname: FsguardCrowdsecPushFailing
        exp_alerts: []
      - eval_time: 14m
        alertname: FsguardCrowdsecPushFailing
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a, pid: "9"}}
  - interval: 1m
    input_series:
      - series: 'fsguard_api_requests_total{{instance="a"}}'
        values: '1 2 3 4 5 6 7 8'
    alert_rule_test:
      - eval_time: 7m
        alertname: FsguardMetricsAbsent
        exp_alerts:
          - exp_labels: {{severity: critical}}
"""


def without_annotations(text: str) -> str:
    out: list[str] = []
    skip_deeper_than: int | None = None
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than is not None:
            if not line.strip() or indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        if line.strip() == "annotations:":
            skip_deeper_than = indent
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def run_alert_tests(tmp_path: Path, tests: str) -> None:
    """`promtool test rules` with `tests` (the YAML list under `tests:`, a str.format
    template) against deploy/prometheus/alerts.yml; fails with promtool's output."""
    promtool = _tool("promtool")
    # promtool compares annotations too: test a copy without them (labels and timing
    # are what matters here; the annotation templates are checked by `check rules`).
    rules = tmp_path / "alerts.yml"
    rules.write_text(without_annotations((PROM / "alerts.yml").read_text()))
    test_file = tmp_path / "alerts_test.yml"
    header = "rule_files:\n  - {alerts}\nevaluation_interval: 1m\ntests:"
    test_file.write_text((header + tests).format(alerts=rules))
    result = _run(promtool, "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_alert_behaviour(tmp_path: Path) -> None:
    """The alerts fire when they should and stay quiet before (promtool test rules)."""
    run_alert_tests(tmp_path, ALERT_TESTS)


def test_promtool_ledger_alert_rules() -> None:
    """The ban-set-full and pending-bans alerts fire (deploy/prometheus/alerts_test.yml)."""
    promtool = _tool("promtool")
    out = _run(promtool, "test", "rules", str(PROM / "alerts_test.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
