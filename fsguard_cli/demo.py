"""`fsguard demo`: the whole system against a simulated FreeSWITCH under a real attack.

The built-in fake FreeSWITCH (fsguard_cli/simulator/) replays the real capture's phases
(SIPVicious scan and crack, a password brute force, toll-fraud and scanner calls on the
external profile, legitimate registration and call), each phase from its own documentation
address, then generated traffic: a registration flood, a toll-fraud probe, and legitimate
phones registering and calling. `fsguard run` (every process, real ZeroMQ, real HTTP) reads
it; the demo polls the REST API and narrates each ban, then checks the legitimate traffic
was left alone.

As root (with ip, ipset, iptables) it enforces for real inside a private network namespace
it creates and deletes; otherwise it runs with `security.dry_run` and says so. Everything
it starts is stopped and everything it creates is removed before it returns.
"""

from __future__ import annotations

import contextlib
import gzip
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from fsguard_cli import simulator as sim
from fsguard_cli.simulator import (
    FakeFreeSwitch,
    ThreadedFakeFreeSwitch,
    load_capture,
    rewrite_source_ip,
)

from .demo_setup import (
    PHASE_STORY,
    SET_NAME,
    DemoFailed,
    Expectation,
    Narrator,
    free_port,
    netns_factory,
    stop_tree,
    wait_until,
    write_config,
)
from .netns import netns, netns_unavailable_reason, run_in, socket_in
from .ops_client import ApiError, ApiUnreachable, OpsClient, SocketFactory, rule_of
from .output import table
from .replay import Phase, load_phases, phase_at

DATA = Path(__file__).parent / "demo_data"
FLOOD_IP = "203.0.113.101"
PROBE_IP = "203.0.113.102"
PHONES = (("203.0.113.121", "1001", "Yealink SIP-T46S 66.86.0.15"),
          ("203.0.113.122", "1002", "Polycom/6.4.3.5018 PolycomVVX-VVX_450-UA/6.4.3.5018"))
START_TIMEOUT = 25.0

class Demo:
    def __init__(self, out: TextIO, force_dry_run: bool) -> None:
        self.n = Narrator(out)
        self.st = self.n.st
        reason = "--dry-run given" if force_dry_run else netns_unavailable_reason()
        self.enforce = reason is None
        self.why_dry = reason or ""
        self.ns = ""
        self.client: OpsClient | None = None
        self.seen: dict[str, dict[str, Any]] = {}
        self.labels: dict[str, str] = {}
        self.expect: list[Expectation] = []
        self._deadline = 0.0

    # --- setup -------------------------------------------------------------------------
    def run(self) -> int:
        n = self.n
        n.say("fsguard demo: a simulated FreeSWITCH under a real attack", "bold")
        if self.enforce:
            n.detail("running as root: bans are enforced for real (ipset + iptables DROP) "
                     "inside a private network namespace, deleted at the end")
        else:
            n.detail(f"dry run ({self.why_dry}): security.dry_run=true, bans are decided and "
                     "recorded but the kernel is not touched")
        with tempfile.TemporaryDirectory(prefix="fsguard-demo-") as tmpdir, \
                contextlib.ExitStack() as stack:
            tmp = Path(tmpdir)
            factory: SocketFactory | None = None
            if self.enforce:
                self.ns = stack.enter_context(netns("fsgdemo"))
                listener = socket_in(self.ns, socket.AF_INET, socket.SOCK_STREAM)
                api_port = 8088  # a fresh namespace: nothing else listens there
                factory = netns_factory(self.ns)
            else:
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                api_port = free_port()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            esl_port = listener.getsockname()[1]
            fake = ThreadedFakeFreeSwitch(FakeFreeSwitch(sock=listener))
            fake.start()
            stack.callback(fake.stop)
            cfg = write_config(tmp, esl_port, api_port, dry_run=not self.enforce)
            cmd = [sys.executable, "-m", "fsguard_cli.cli", "run", "--config", str(cfg)]
            if self.enforce:
                cmd = ["ip", "netns", "exec", self.ns, *cmd]
            log_path = tmp / "fsguard.log"
            with open(log_path, "wb") as log_file:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            stack.callback(stop_tree, proc)
            where = f" in namespace {self.ns}" if self.enforce else ""
            n.say(f"started `fsguard run`{where} (pid {proc.pid}): supervisor, 2 workers, "
                  "firewall, REST API")
            n.detail(f"config, sockets and log in the temporary directory {tmp}")
            self.client = OpsClient(f"http://127.0.0.1:{api_port}", timeout=3.0,
                                    socket_factory=factory)
            try:
                self._wait_ready(fake, proc)
                self._scenario(fake)
                ok = self._summary()
            except DemoFailed as exc:
                n.say(f"demo failed: {exc}", "red", "bold")
                tail = log_path.read_text(errors="replace")[-3000:]
                if tail:
                    n.detail("last lines of the fsguard log:\n" + tail)
                ok = False
            n.say("stopping fsguard (SIGTERM), the simulator"
                  + (", deleting the namespace" if self.enforce else "")
                  + " and the temporary directory")
        n.say("done: nothing left behind" if ok else "done (with failures)",
              "green" if ok else "red")
        return 0 if ok else 1

    def _wait_ready(self, fake: ThreadedFakeFreeSwitch, proc: subprocess.Popen[bytes]) -> None:
        assert self.client is not None
        client = self.client
        if not fake.wait_for_subscription(START_TIMEOUT):
            raise DemoFailed(f"fsguard never subscribed to events (exit {proc.poll()})")

        def api_up() -> bool:
            try:
                client.health()
                return True
            except (ApiUnreachable, ApiError):
                return proc.poll() is not None

        if not wait_until(api_up, START_TIMEOUT, 0.1) or proc.poll() is not None:
            raise DemoFailed(f"the REST API never answered (exit {proc.poll()})")
        self.n.say("fsguard connected to the simulated FreeSWITCH (event json ALL) and its "
                   f"REST API answers at {client.url}", "green")

    # --- traffic -----------------------------------------------------------------------
    def _scenario(self, fake: ThreadedFakeFreeSwitch) -> None:
        n = self.n
        self._deadline = time.monotonic() + 20.0
        self._legit_phones(fake, first=True)
        phases = load_phases(DATA / "phases_json.txt")
        with gzip.open(DATA / "capture_json.bin.gz", "rb") as fh:
            events = load_capture(fh.read())
        by_phase: dict[str, list[sim.EventLike]] = {p.name: [] for p in phases}
        for ev in events:
            name = ev.name
            if name == "CUSTOM":
                name = next((v for k, v in ev.headers if k == "Event-Subclass"), name)
            phase = phase_at(phases, ev.timestamp_us / 1e6, name)
            if phase is None:
                continue
            by_phase[phase.name].append((rewrite_source_ip(ev.headers, phase.ip), ev.body or b""))
        n.say("replaying the real capture (FreeSWITCH 1.10.12 under SIPp and SIPVicious), "
              "each phase from its own address:", "bold")
        for phase in phases:
            self._replay_phase(fake, phase, by_phase[phase.name])
        self._flood(fake)
        self._probe(fake)
        self._legit_phones(fake, first=False)
        missing = [e.ip for e in self.expect if e.banned and e.ip not in self.seen]
        for ip in missing:  # give late decisions a chance before judging
            self._collect(max(0.0, self._deadline - time.monotonic()), until=ip)
        self._collect(0.5)  # and a wrongful ban of the last legitimate traffic time to show

    def _replay_phase(self, fake: ThreadedFakeFreeSwitch, phase: Phase,
                      batch: list[sim.EventLike]) -> None:
        key = phase.name.split("_", 1)[0]
        story, banned = PHASE_STORY.get(key, (phase.name, False))
        self.labels[phase.ip] = f"capture phase {key}: {story}"
        if not batch:
            self.n.say(f"phase {key} ({phase.ip}): {story}: no ESL event at all")
            return
        self.expect.append(Expectation(phase.ip, self.labels[phase.ip], banned))
        self.n.say(f"phase {key} ({phase.ip}): {story}: {len(batch)} events")
        fake.send_events(batch)
        self._collect(1.5 if banned else 0.3, until=phase.ip if banned else None)

    def _flood(self, fake: ThreadedFakeFreeSwitch) -> None:
        label = "generated: registration flood, 15 REGISTERs in a second from one phone UA"
        self.labels[FLOOD_IP] = label
        self.expect.append(Expectation(FLOOD_IP, label, True))
        self.n.say(f"{label} ({FLOOD_IP})")
        fake.send_events([sim.pre_register(FLOOD_IP, user=str(2000 + i % 3),
                                           user_agent="Grandstream GXP2170 1.0.11.23")
                          for i in range(15)])
        self._collect(2.0, until=FLOOD_IP)

    def _probe(self, fake: ThreadedFakeFreeSwitch) -> None:
        label = "generated: toll-fraud probe, unauthenticated call to 00972599999999 " \
                "on the external profile"
        self.labels[PROBE_IP] = label
        self.expect.append(Expectation(PROBE_IP, label, True))
        self.n.say(f"{label} ({PROBE_IP})")
        uuid = "d3m0d3m0-0000-4000-8000-000000000001"
        fake.send_events([sim.channel_create(
            PROBE_IP, uuid, destination="00972599999999", context="public",
            profile="external", user_agent="Zoiper rv2.10.20.4", authorized=False,
            from_user="100")])
        self._collect(2.0, until=PROBE_IP)

    def _legit_phones(self, fake: ThreadedFakeFreeSwitch, *, first: bool) -> None:
        batch: list[sim.EventLike] = []
        for ip, user, ua in PHONES:
            if first:
                self.labels[ip] = f"generated: legitimate phone {user} ({ua.split()[0]})"
                self.expect.append(Expectation(ip, self.labels[ip], False))
                batch.append(sim.pre_register(ip, user, user_agent=ua))
                batch.append(sim.register_attempt(ip, user, user_agent=ua, auth_result="RENEWED"))
                batch.append(sim.register(ip, user, user_agent=ua))
            else:
                other = "1002" if user == "1001" else "1001"
                uuid = f"d3m0ca11-0000-4000-8000-00000000{user}"
                batch.append(sim.channel_create(ip, uuid, destination=other, user_agent=ua,
                                                from_user=user))
                batch.append(sim.channel_hangup_complete(ip, uuid, destination=other,
                                                         user_agent=ua, from_user=user))
        what = "register (401 challenge, then 200)" if first else "call each other and hang up"
        self.n.say(f"legitimate phones {', '.join(p[0] for p in PHONES)} {what}")
        fake.send_events(batch)
        self._collect(0.3)

    # --- observing -----------------------------------------------------------------------
    def _collect(self, timeout: float, until: str | None = None) -> None:
        """Poll GET /security/blacklist; narrate new bans; stop early once `until` is banned."""
        assert self.client is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                current = self.client.blacklist()
            except (ApiUnreachable, ApiError) as exc:
                raise DemoFailed(f"GET /security/blacklist failed: {exc}") from exc
            for ip, entry in current.items():
                if ip not in self.seen:
                    self.seen[ip] = entry
                    self._narrate_ban(ip, entry)
            if (until is not None and until in self.seen) or time.monotonic() >= deadline:
                return
            time.sleep(0.1)

    def _narrate_ban(self, ip: str, entry: dict[str, Any]) -> None:
        st = self.st
        rule = rule_of(entry)
        self.n.say(f"  BANNED {ip}  rule {rule}", "red", "bold")
        self.n.detail(f"evidence: {entry.get('reason', '')}"
                      + (f" (fail count {entry['failCount']})" if entry.get("failCount") else "")
                      + f"; expires {entry.get('expiresAt') or 'never'}")
        if self.enforce:
            proc = run_in(self.ns, ["ipset", "test", SET_NAME, ip])
            verdict = (st("in the kernel set, packets from it are dropped", "green")
                       if proc.returncode == 0 else st("NOT in the kernel set", "red"))
            self.n.detail(f"ipset {SET_NAME}: {verdict}")

    def _summary(self) -> bool:
        assert self.client is not None
        n, st = self.n, self.st
        n.say("summary", "bold")
        rows = []
        ok = True
        for exp in self.expect:
            banned = exp.ip in self.seen
            entry = self.seen.get(exp.ip, {})
            good = banned == exp.banned
            ok = ok and good
            outcome = (f"banned ({rule_of(entry)})" if banned else "left alone")
            mark = st("ok", "green") if good else st("UNEXPECTED", "red", "bold")
            rows.append((exp.ip, outcome, mark, exp.label))
        for ip, entry in self.seen.items():
            if ip not in self.labels:
                ok = False
                rows.append((ip, f"banned ({rule_of(entry)})", st("UNEXPECTED", "red"), "?"))
        self.n.out.write(table(("ADDRESS", "OUTCOME", "CHECK", "TRAFFIC"), rows, style=st,
                               indent="  ") + "\n")
        try:
            esl = self.client.esl()
            n.detail(f"GET /security/esl: eventsQueued {esl.get('eventsQueued')}, "
                     f"eventsProcessed {esl.get('eventsProcessed')} by "
                     f"{esl.get('workerCount')} workers, eventsDropped "
                     f"{esl.get('eventsDropped')}")
        except (ApiUnreachable, ApiError) as exc:
            n.detail(f"GET /security/esl failed: {exc}")
        n.detail(f"{len(self.seen)} addresses banned; "
                 f"legitimate traffic left alone: "
                 f"{sum(1 for e in self.expect if not e.banned and e.ip not in self.seen)} of "
                 f"{sum(1 for e in self.expect if not e.banned)} sources")
        if not ok:
            n.say("some outcomes were not the expected ones", "red", "bold")
        return ok


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(*, force_dry_run: bool = False, out: TextIO | None = None) -> int:
    demo = Demo(out or sys.stdout, force_dry_run)
    with _sigterm_as_interrupt():
        try:
            return demo.run()
        except KeyboardInterrupt:
            demo.n.say("interrupted; everything was stopped and removed", "yellow")
            return 1
