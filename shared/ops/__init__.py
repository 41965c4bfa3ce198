"""The control plane's contract: one request Struct and one reply type per op.

Each role's ops are declared once, in `shared/ops/<role>.py`, as `Op` constants
collected in that role's `Registry`. The server binds a handler to each op of its
registry (`OpTable.bind`, checked by mypy against the op's types and at start against
the registry), and every client (the API, the CLI, the fleet connector, other roles)
calls an op through `shared.control.call` / `acall`, which encode the request Struct and
decode the reply into the op's reply type. A wrong field is a type error for mypy, and a
bad request from an older client is a 400 naming the field, not a handler's KeyError.

    ops/base.py        Op, Registry, OpTable, Empty (the machinery)
    ops/common.py      Structs every role answers with (ping, log level)
    ops/firewall.py    the firewall's ops
    ops/worker.py      the workers' ops
    ops/supervisor.py  the supervisor's ops
    ops/doc.py         docs/control.md, generated from the registries
"""
