"""deploy/install.sh: install, offline install from a wheelhouse, uninstall (issue 14 §6).

The real-install test builds a wheelhouse with `make wheelhouse`, then runs install.sh for
real (as root) with every path under a temporary prefix (FSGUARD_* overrides) and a
throw-away service user, inside a network namespace holding only `lo`, so the install
cannot reach any index. The installed fsguard runs as that user. `--uninstall` then
removes everything it created, and the namespace's fsguard sets and DROP rules, while
another set and rule in the same namespace stay.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns_helpers import netns, requires_netns, run_in

ROOT = Path(__file__).resolve().parent.parent
INSTALL_SH = ROOT / "deploy" / "install.sh"
RUNTIME_LOCK = ROOT / "deploy" / "runtime_lock.py"
SYSTEM_PYTHON = next(
    (p for p in ("/usr/bin/python3.11", "/usr/bin/python3") if Path(p).exists()), None
)
requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="install.sh needs root")
requires_system_python = pytest.mark.skipif(
    SYSTEM_PYTHON is None, reason="no /usr/bin/python3 (Debian: apt-get install python3-venv)"
)


def install_sh(*args: str, env: dict[str, str] | None = None, ns: str | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
    argv = ["bash", str(INSTALL_SH), *args]
    if ns is not None:
        argv = ["ip", "netns", "exec", ns, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})  # fmt: skip


# --- the run-time lock ------------------------------------------------------------------------


def test_runtime_lock_is_the_run_time_closure_with_hashes() -> None:
    done = subprocess.run(
        ["python3", str(RUNTIME_LOCK), "subset", str(ROOT / "requirements.lock"),
         str(ROOT / "pyproject.toml"), "setuptools"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    names = set(re.findall(r"^([a-z0-9-]+)==", done.stdout, re.M))
    assert {"pyzmq", "msgspec", "fastapi", "starlette", "pydantic", "pydantic-core", "anyio",
            "uvicorn", "click", "h11", "ipset-c", "prometheus-client", "setuptools"} <= names
    assert not names & {"pytest", "mypy", "ruff", "schemathesis", "hypothesis", "py-spy",
                        "httpx", "pyyaml"}, names  # fmt: skip
    for block in re.split(r"\n(?=[a-z0-9-]+==)", done.stdout.split("\n", 1)[1].strip()):
        assert "--hash=sha256:" in block, block
        assert not block.rstrip().endswith("\\"), block
    lock = (ROOT / "requirements.lock").read_text()
    for line in done.stdout.splitlines()[1:]:
        assert line.strip() in lock or line.strip() + " \\" in lock, line  # copied verbatim


# --- dry runs ---------------------------------------------------------------------------------


@requires_system_python
def test_dry_run_installs_from_the_lock_with_hashes() -> None:
    assert SYSTEM_PYTHON is not None
    done = install_sh("--dry-run", env={"PYTHON": SYSTEM_PYTHON})
    assert done.returncode == 0, done.stderr
    assert re.search(r"pip .*install --quiet --require-hashes --no-deps -r \S+$", done.stdout, re.M)
    assert re.search(r"pip .*install --quiet --no-deps --no-build-isolation --upgrade ",
                     done.stdout)  # fmt: skip
    assert "the service user can run" in done.stdout or "not root" in done.stdout


def test_usage_errors() -> None:
    assert install_sh("--keep-state").returncode == 2
    assert install_sh("--wheelhouse").returncode == 2
    done = install_sh("--dry-run", "--wheelhouse", "/nonexistent")
    assert done.returncode == 1 and "is not a wheelhouse" in done.stderr


@requires_root
def test_refuses_an_interpreter_the_service_user_cannot_run(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    python = shutil.which("python3") or "python3"
    subprocess.run([python, "-m", "venv", "--copies", "--without-pip", str(private / "venv")],
                   check=True, timeout=120)  # fmt: skip
    own = str(private / "venv" / "bin" / "python3")
    done = install_sh("--dry-run", env={"PYTHON": own})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot run" in done.stderr and "Permission denied" in done.stderr, done.stderr
    assert "PYTHON=/usr/bin/python3" in done.stderr  # says what to do


def test_uninstall_dry_run_changes_nothing(tmp_path: Path) -> None:
    env = overrides(tmp_path, "fsgnotauser")
    for key in ("FSGUARD_PREFIX", "FSGUARD_CONFIG_DIR", "FSGUARD_STATE_DIR"):
        Path(env[key]).mkdir(parents=True)
    done = install_sh("--dry-run", "--uninstall", env=env)
    assert done.returncode == 0, done.stderr
    for key in ("FSGUARD_PREFIX", "FSGUARD_CONFIG_DIR", "FSGUARD_STATE_DIR"):
        assert f"+ rm -rf {env[key]}" in done.stdout
        assert Path(env[key]).is_dir()
    done = install_sh("--dry-run", "--uninstall", "--keep-state", env=env)
    assert f"rm -rf {env['FSGUARD_STATE_DIR']}" not in done.stdout
    assert f"rm -rf {env['FSGUARD_CONFIG_DIR']}" not in done.stdout
    done = install_sh("--dry-run", "--uninstall", env={**env, "FSGUARD_PREFIX": "/usr"})
    assert done.returncode == 1 and "refusing to remove /usr" in done.stderr


# --- a real install, offline, and a real uninstall ---------------------------------------------


def overrides(base: Path, user: str) -> dict[str, str]:
    return {
        "FSGUARD_PREFIX": str(base / "opt"),
        "FSGUARD_BIN_LINK": str(base / "bin" / "fsguard"),
        "FSGUARD_CONFIG_DIR": str(base / "etc"),
        "FSGUARD_STATE_DIR": str(base / "state"),
        "FSGUARD_UNIT_DIR": str(base / "units"),
        "FSGUARD_DOC_DIR": str(base / "doc"),
        "FSGUARD_MODULES_CONF": str(base / "modules-load.d" / "fsguard.conf"),
        "FSGUARD_USER": user,
        "FSGUARD_SKIP_MODPROBE": "1",
    }


@pytest.fixture(scope="module")
def wheelhouse() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="fsg-wheelhouse-"))
    try:
        out = base / "wh"
        done = subprocess.run(["make", "-C", str(ROOT), "wheelhouse", f"WHEELHOUSE={out}"],
                              capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        yield out
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _user_exists(name: str) -> bool:
    return subprocess.run(["getent", "passwd", name], capture_output=True).returncode == 0


PRODUCT_PACKAGES = sorted(
    p.name for p in ROOT.iterdir()
    if (p.name == "shared" or p.name.startswith("fsguard_")) and (p / "__init__.py").exists()
)  # fmt: skip
MODULE_COUNT = sum(
    1 for pkg in PRODUCT_PACKAGES for path in (ROOT / pkg).rglob("*.py")
    if path.name != "__main__.py"
)  # fmt: skip
# imports every module of the packages named in argv (outside the checkout: cwd "/")
IMPORT_ALL = """
import importlib, pkgutil, sys
n = 0
for name in sys.argv[1:]:
    pkg = importlib.import_module(name)
    n += 1
    for mod in pkgutil.walk_packages(pkg.__path__, name + "."):
        if not mod.name.endswith("__main__"):
            importlib.import_module(mod.name)
            n += 1
print(n)
"""

KERNEL_SETUP = [
    ["ipset", "create", "freeswitch-security", "hash:ip", "timeout", "3600"],
    ["ipset", "create", "freeswitch-security-v6", "hash:ip", "family", "inet6", "timeout", "3600"],
    ["ipset", "create", "not-fsguard", "hash:ip"],
    ["iptables", "-I", "INPUT", "1", "-m", "set", "--match-set", "freeswitch-security", "src",
     "-j", "DROP"],
    ["ip6tables", "-I", "INPUT", "1", "-m", "set", "--match-set", "freeswitch-security-v6",
     "src", "-j", "DROP"],
    ["iptables", "-A", "INPUT", "-s", "192.0.2.1", "-j", "DROP"],
]  # fmt: skip


@pytest.mark.timeout(1200)
@requires_root
@requires_netns
@requires_system_python
def test_offline_install_runs_as_the_service_user_and_uninstall_removes_it(
    wheelhouse: Path,
) -> None:
    assert SYSTEM_PYTHON is not None
    user = f"fsgt{os.getpid() % 100000}"
    assert not _user_exists(user)
    base = Path(tempfile.mkdtemp(prefix="fsg-install-"))
    base.chmod(0o755)  # the service user must reach the venv, as under /opt
    env = {**overrides(base, user), "PYTHON": SYSTEM_PYTHON}
    try:
        with netns("fsginst") as ns:
            done = install_sh("--wheelhouse", str(wheelhouse), env=env, ns=ns)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            assert "offline, every file hash-checked" in done.stdout
            assert _user_exists(user)
            fsguard = env["FSGUARD_BIN_LINK"]
            config = f"{env['FSGUARD_CONFIG_DIR']}/config.json"
            ran = subprocess.run(["runuser", "-u", user, "--", fsguard, "check-config", config],
                                 capture_output=True, text=True, timeout=60, cwd="/")  # fmt: skip
            assert ran.returncode == 0, ran.stderr
            assert "OK" in ran.stderr
            # every module of the repository's packages is in the installed venv
            python = f"{env['FSGUARD_PREFIX']}/venv/bin/python"
            imported = subprocess.run(["runuser", "-u", user, "--", python, "-c", IMPORT_ALL,
                                       *PRODUCT_PACKAGES], capture_output=True, text=True,
                                      timeout=120, cwd="/")  # fmt: skip
            assert imported.returncode == 0, imported.stderr[-3000:]
            assert int(imported.stdout) >= MODULE_COUNT, imported.stdout
            units = sorted(os.listdir(env["FSGUARD_UNIT_DIR"]))
            assert units == sorted(p.name for p in (ROOT / "deploy" / "systemd").iterdir())
            state = Path(env["FSGUARD_STATE_DIR"])
            (state / "fsguard.db").write_bytes(b"kept?")
            # Upgrade in place is idempotent.
            again = install_sh("--wheelhouse", str(wheelhouse), env=env, ns=ns)
            assert again.returncode == 0, again.stderr[-3000:]

            for argv in KERNEL_SETUP:
                run_in(ns, argv, check=True)
            done = install_sh("--uninstall", "--keep-state", env=env, ns=ns)
            assert done.returncode == 0, done.stdout + done.stderr
            assert not Path(env["FSGUARD_PREFIX"]).exists()
            assert not Path(fsguard).exists() and not os.path.islink(fsguard)
            assert os.listdir(env["FSGUARD_UNIT_DIR"]) == []
            assert not Path(env["FSGUARD_DOC_DIR"]).exists()
            assert not Path(env["FSGUARD_MODULES_CONF"]).exists()
            assert not _user_exists(user)
            assert (state / "fsguard.db").read_bytes() == b"kept?"  # --keep-state
            assert Path(config).exists()
            sets = run_in(ns, ["ipset", "list", "-n"]).stdout.split()
            assert sets == ["not-fsguard"], sets
            v4 = run_in(ns, ["iptables", "-S", "INPUT"]).stdout
            v6 = run_in(ns, ["ip6tables", "-S", "INPUT"]).stdout
            assert "match-set" not in v4 + v6, v4 + v6
            assert "-A INPUT -s 192.0.2.1/32 -j DROP" in v4  # not fsguard's: kept

            # Reinstall over the kept state, then a full uninstall removes the data too.
            done = install_sh("--wheelhouse", str(wheelhouse), env=env, ns=ns)
            assert done.returncode == 0, done.stderr[-3000:]
            assert state.stat().st_uid == (state / "fsguard.db").stat().st_uid != 0
            done = install_sh("--uninstall", env=env, ns=ns)
            assert done.returncode == 0, done.stderr
            assert not state.exists() and not Path(config).exists()
            assert not _user_exists(user)
    finally:
        if _user_exists(user):
            subprocess.run(["userdel", user], check=False)
            subprocess.run(["groupdel", user], check=False)
        shutil.rmtree(base, ignore_errors=True)
