"""One client's session state in the fake FreeSWITCH, and the replies to its commands.

Subscriptions follow mod_event_socket: `event [plain|json|xml] NAME... [CUSTOM sub...]`;
`api` replies come from the configured responses, `sofia xmlstatus gateway` from the
simulated gateways, and `uuid_kill` from the channels created so far.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .capture import first
from .sofia import SimGateway, xmlstatus_gateways

GOODBYE = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
REJECTION = b"Access Denied, go away.\n"
CMD_END = re.compile(rb"\n\r?\n")


@dataclass(eq=False)
class Client:
    writer: asyncio.StreamWriter
    authed: bool = False
    fmt: str | None = None  # subscribed event format
    all_events: bool = False
    names: set[str] = field(default_factory=set)
    subclasses: set[str] = field(default_factory=set)
    silent: bool = False

    @property
    def subscribed(self) -> bool:
        return self.fmt is not None and (self.all_events or bool(self.names or self.subclasses))

    def wants(self, headers: Sequence[tuple[str, str]]) -> bool:
        if self.silent or not self.authed or self.fmt is None:
            return False
        if self.all_events:
            return True
        name = (first(headers, "Event-Name") or "").upper()
        if name == "CUSTOM":
            return (first(headers, "Event-Subclass") or "") in self.subclasses
        return name in self.names

    def write(self, data: bytes) -> None:
        if not self.silent and not self.writer.is_closing():
            self.writer.write(data)


def subscribe(client: Client, tokens: list[str]) -> str:
    """Apply an `event` command to the client; returns the Reply-Text (+OK when valid)."""
    fmt = "plain"
    if tokens and tokens[0].lower() in ("plain", "json", "xml"):
        fmt = tokens.pop(0).lower()
    client.fmt = fmt
    custom = False
    valid = False
    for tok in tokens:
        if custom:
            client.subclasses.add(tok)
            valid = True
        elif tok.upper() == "CUSTOM":
            custom = True
            client.names.add("CUSTOM")
            valid = True
        elif tok.upper() == "ALL":
            client.all_events = True
            valid = True
        elif re.fullmatch(r"[A-Za-z_]+", tok):
            client.names.add(tok.upper())
            valid = True
    if not valid:
        return "-ERR no keywords supplied"
    return f"+OK event listener enabled {fmt}"


def api_output(
    command: str, responses: dict[str, str], gateways: list[SimGateway], channels: set[str]
) -> str:
    """The body of an `api` command's reply (`uuid_kill` forgets the channel it kills)."""
    name, _, arg = command.partition(" ")
    best = ""
    for key in responses:
        if command.startswith(key) and len(key) > len(best):
            best = key
    if best:
        return responses[best]
    if command.split() == ["sofia", "xmlstatus", "gateway"]:
        return xmlstatus_gateways(gateways)
    if name == "uuid_kill":
        uid = arg.split(" ", 1)[0]
        if uid in channels:
            channels.discard(uid)
            return "+OK\n"
        return "-ERR No such channel!\n"
    return f"-ERR {name} Command not found!\n"
