"""Typed control ops: `Op` (name, request type, reply type, role), a role's `Registry`
and a server's `OpTable` of bound handlers.

The wire stays msgpack `ControlRequest(op, args)` / `ControlReply(data)`: the request
Struct travels as its fields (`msgspec.to_builtins`) and is rebuilt on the server with
`msgspec.convert(args, op.request)`, so validation happens once, at the boundary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import msgspec

Role = Literal["supervisor", "worker", "firewall", "api"]

ReqT = TypeVar("ReqT", bound=msgspec.Struct)
RepT = TypeVar("RepT")


class Empty(msgspec.Struct, frozen=True, kw_only=True):
    """The request of an op that takes no arguments."""


class BadRequest(ValueError):
    """A request's args do not fit its op's request type (answered with 400)."""


@dataclass(frozen=True)
class Op(Generic[ReqT, RepT]):
    """One control operation of one role."""

    role: Role
    name: str
    request: type[ReqT]
    reply: type[RepT]  # a Struct, or a container of them (`list[str]`, `dict[str, X]` ...)
    doc: str = ""

    def decode_request(self, args: dict[str, Any]) -> ReqT:
        try:
            return msgspec.convert(args, type=self.request)
        except msgspec.ValidationError as exc:
            raise BadRequest(f"{self.name}: {exc}") from None

    def decode_reply(self, data: Any) -> RepT:
        return msgspec.convert(data, type=self.reply)


class Registry:
    """Every op of one role, by name: what its server must answer and its clients may ask."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self._ops: dict[str, Op[Any, Any]] = {}

    def op(
        self, name: str, request: type[ReqT], reply: type[RepT], doc: str = ""
    ) -> Op[ReqT, RepT]:
        """Declare one op of this role."""
        if name in self._ops:
            raise ValueError(f"{self.role} op {name!r} declared twice")
        op = Op(self.role, name, request, reply, doc)
        self._ops[name] = op
        return op

    def get(self, name: str) -> Op[Any, Any] | None:
        return self._ops.get(name)

    def names(self) -> list[str]:
        return sorted(self._ops)

    def __iter__(self) -> Iterator[Op[Any, Any]]:
        return iter(self._ops.values())


Handler = Callable[[Any], Any]
AsyncHandler = Callable[[Any], Awaitable[Any]]


class OpTable:
    """A server's handlers, one per op of its registry (sync and async ones)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.handlers: dict[str, Handler] = {}
        self.async_handlers: dict[str, AsyncHandler] = {}

    def bind(self, op: Op[ReqT, RepT], handler: Callable[[ReqT], RepT]) -> None:
        self._check(op)
        self.handlers[op.name] = handler

    def bind_async(self, op: Op[ReqT, RepT], handler: Callable[[ReqT], Awaitable[RepT]]) -> None:
        self._check(op)
        self.async_handlers[op.name] = handler

    def bound(self, op: Op[ReqT, RepT]) -> Callable[[ReqT], RepT]:
        """The handler bound to op (to wrap it: auditing, extra counters)."""
        handler: Callable[[ReqT], RepT] = self.handlers[op.name]
        return handler

    def rebind(self, op: Op[ReqT, RepT], handler: Callable[[ReqT], RepT]) -> None:
        """Replace op's handler (a wrapper around `bound(op)`)."""
        if op.name not in self.handlers:
            raise ValueError(f"{op.role} op {op.name!r} is not bound")
        self.handlers[op.name] = handler

    def missing(self) -> list[str]:
        """Ops of the registry with no handler (a server must have none)."""
        bound = self.handlers.keys() | self.async_handlers.keys()
        return [name for name in self.registry.names() if name not in bound]

    def _check(self, op: Op[Any, Any]) -> None:
        if op.role != self.registry.role or self.registry.get(op.name) is not op:
            raise ValueError(f"op {op.role}.{op.name} is not in the {self.registry.role} registry")
        if op.name in self.handlers or op.name in self.async_handlers:
            raise ValueError(f"{op.role} op {op.name!r} bound twice")
