"""`fsguard replay`'s report: the verdicts in order, the would-be bans, counts and speed."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, TextIO

from .output import Style, human_duration, table

if TYPE_CHECKING:
    from .replay import ReplayResult


def render_text(result: ReplayResult, out: TextIO, *, speed: float | None) -> None:
    st = Style.for_stream(out)
    mode = "flat out (--max)" if speed is None else f"recorded pace / {speed:g}"
    fmts = "+".join(sorted(result.formats)) or "no events"
    w = out.write
    w(st(f"replay of {result.capture}", "bold") + f": {result.frames} frames, "
      f"{result.events} events ({fmts}), {mode}; engine clock = Event-Date-Timestamp\n")
    w(f"source addresses: {result.addresses}\n\n")
    for v in result.verdicts:
        where = f"after event #{v.event_number} {v.event}"
        if v.event_sequence:
            where += f" (Event-Sequence {v.event_sequence})"
        if v.phase:
            where += f" [phase {v.phase}]"
        if v.kind in ("ban", "simulated"):
            label = st("BAN ", "red", "bold") if v.kind == "ban" else st("SIM ", "cyan")
            w(f"{label} {st(v.ip, 'bold')}  rule {st(v.rule, 'yellow')}  {where}\n")
            details = [f"reason: {v.reason}"]
            if v.user:
                details.append(f"user {v.user}")
            if v.user_agent:
                details.append(f'user agent "{v.user_agent}"')
            details.append(f"evidence {v.evidence_count} event(s)")
            details.append(f"duration {human_duration(v.duration)}")
            w("     " + "; ".join(details) + "\n")
        else:
            w(f"{st('KILL', 'magenta', 'bold')} call {v.uuid} ({v.reason})  {where}\n")
    if not result.verdicts:
        w("no address would be banned\n")
    bans = result.bans
    if bans:
        w("\n" + st(f"would ban {len(bans)} address(es):", "bold") + "\n")
        rows = [(v.ip, v.rule, f"#{v.event_number}", v.event, v.phase or "-") for v in bans]
        w(table(("ADDRESS", "RULE", "EVENT", "EVENT NAME", "PHASE"), rows, style=st) + "\n")
    w("\n" + table(("EVENT TYPE", "COUNT"), result.by_type.most_common(), right=(1,), style=st)
      + "\n")
    rules = Counter(v.rule for v in bans)
    rows2: list[tuple[str, int]] = list(rules.most_common())
    if result.kills:
        rows2.append(("(calls killed)", len(result.kills)))
    if rows2:
        w("\n" + table(("RULE", "DECISIONS"), rows2, right=(1,), style=st) + "\n")
    stats = result.engine_stats
    w(f"\nprocessed {result.events} events in {result.seconds:.3f} s = "
      f"{result.events_per_second:,.0f} events/s (capture spans {result.capture_span:.1f} s); "
      f"trusted skipped {stats.get('trusted_skipped', 0)}, "
      f"decode errors {stats.get('decode_errors', 0)}\n")


def render_json(result: ReplayResult, out: TextIO) -> None:
    json.dump(result.as_json(), out, indent=2)
    out.write("\n")
