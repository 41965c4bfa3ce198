"""A real CrowdSec Local API for the fleet tests (Debian's crowdsec 1.4.6, no service).

`make crowdsec` (and .ci/run) put the package's files under .cache/crowdsec/root
(`apt-get download crowdsec` + `dpkg -x`); FSGUARD_CROWDSEC_ROOT overrides the place.
`running_lapi` writes a config (SQLite, central API off, no agent: `-no-cs`), starts
`crowdsec` as a LAPI, optionally inside a network namespace, and creates machines and
bouncers with `cscli`. Without the binaries the tests skip, except under CI (CI set),
where they fail: CI must never pass without exercising the real LAPI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.netns_helpers import socket_in

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO / ".cache" / "crowdsec" / "root"
CSCLI_MACHINE = "fsguard-tests-cscli"


def crowdsec_root() -> Path:
    return Path(os.environ.get("FSGUARD_CROWDSEC_ROOT", DEFAULT_ROOT))


def require_crowdsec() -> Path:
    """The extracted package root; skip (fail under CI) when the binaries are missing."""
    root = crowdsec_root()
    if (root / "usr/bin/crowdsec").is_file() and (root / "usr/bin/cscli").is_file():
        return root
    message = f"crowdsec binaries not found under {root}: run `make crowdsec`"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: the fleet tests must run)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Lapi:
    """One crowdsec LAPI process and its files; `url` is how local clients reach it."""

    def __init__(self, root: Path, workdir: Path, port: int, ns: str | None, listen: str) -> None:
        self.root = root
        self.dir = workdir
        self.port = port
        self.ns = ns
        self.listen = listen
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "crowdsec.log"
        self.config = workdir / "config.yaml"
        self._write_config()

    def _write_config(self) -> None:
        d = self.dir
        (d / "data").mkdir(parents=True, exist_ok=True)
        (d / "hub").mkdir(exist_ok=True)
        (d / "hub" / ".index.json").write_text("{}")
        etc = self.root / "etc/crowdsec"
        for name in ("profiles.yaml", "simulation.yaml"):
            (d / name).write_text((etc / name).read_text())
        (d / "acquis.yaml").write_text("")
        self.config.write_text(
            f"""common:
  daemonize: false
  log_media: stdout
  log_level: info
  working_dir: {d}
config_paths:
  config_dir: {d}/
  data_dir: {d}/data/
  simulation_path: {d}/simulation.yaml
  hub_dir: {d}/hub/
  index_path: {d}/hub/.index.json
  notification_dir: {d}/notifications/
  plugin_dir: {d}/plugins/
crowdsec_service:
  acquisition_path: {d}/acquis.yaml
cscli:
  output: json
db_config:
  log_level: info
  type: sqlite
  db_path: {d}/data/crowdsec.db
  use_wal: true
api:
  client:
    credentials_path: {d}/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: {self.listen}:{self.port}
    profiles_path: {d}/profiles.yaml
    trusted_ips: ["127.0.0.1", "::1"]
prometheus:
  enabled: false
"""
        )

    def _argv(self, binary: str, *args: str) -> list[str]:
        argv = [str(self.root / "usr/bin" / binary), "-c", str(self.config), *args]
        return ["ip", "netns", "exec", self.ns, *argv] if self.ns else argv

    def start(self, timeout: float = 20.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self._argv("crowdsec", "-no-cs"),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.dir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("crowdsec exited:\n" + self.log.read_text()[-2000:])
            if self.reachable():
                return
            time.sleep(0.1)
        raise RuntimeError("crowdsec LAPI did not listen:\n" + self.log.read_text()[-2000:])

    def reachable(self) -> bool:
        family, kind = socket.AF_INET, socket.SOCK_STREAM
        sock = socket_in(self.ns, family, kind) if self.ns else socket.socket(family, kind)
        sock.settimeout(0.5)
        try:
            sock.connect(("127.0.0.1", self.port))
            return True
        except OSError:
            return False
        finally:
            sock.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def cscli(self, *args: str, check: bool = True) -> Any:
        """Run cscli (JSON output); the decoded answer, or the raw text if not JSON."""
        done = subprocess.run(
            self._argv("cscli", *args), capture_output=True, text=True, timeout=60
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"cscli {' '.join(args)} failed: {done.stderr[-1000:]}")
        try:
            return json.loads(done.stdout) if done.stdout.strip() else None
        except ValueError:
            return done.stdout

    def add_machine(self, name: str, password: str) -> None:
        self.cscli(
            "machines",
            "add",
            name,
            "--password",
            password,
            "-f",
            str(self.dir / "unused.yaml"),
            "--force",
        )

    def add_bouncer(self, name: str, key: str) -> None:
        self.cscli("bouncers", "add", name, "-k", key)

    def enable_cscli(self) -> None:
        """A machine for cscli's own decisions commands (they go through the LAPI)."""
        self.cscli(
            "machines",
            "add",
            CSCLI_MACHINE,
            "--auto",
            "--force",
            "--url",
            self.url,
            "-f",
            str(self.dir / "local_api_credentials.yaml"),
        )

    def decisions(self, *extra: str) -> list[dict[str, Any]]:
        """`cscli decisions list` (plain: what an operator sees without -a), as JSON alerts."""
        data = self.cscli("decisions", "list", *extra)
        return list(data or [])


@contextmanager
def running_lapi(
    workdir: Path, *, ns: str | None = None, listen: str = "127.0.0.1", port: int | None = None
) -> Iterator[Lapi]:
    root = require_crowdsec()
    workdir.mkdir(parents=True, exist_ok=True)
    lapi = Lapi(root, workdir, port or free_port(), ns, listen)
    lapi.start()
    try:
        lapi.enable_cscli()
        yield lapi
    finally:
        lapi.stop()
