"""`python -m fsguard_cli.simulator`: a standalone fake FreeSWITCH Event Socket server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from .capture import load_capture
from .server import FakeFreeSwitch


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeFreeSwitch(args.host, args.port, args.password,
                          heartbeat_interval=args.heartbeat)
    await fake.start()
    print(f"fake FreeSWITCH ESL listening on {args.host}:{fake.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.replay:
        events = load_capture(args.replay)
        waiter = loop.create_task(fake.wait_for_subscription(86400 * 365))
        await asyncio.wait({waiter, loop.create_task(stop.wait())},
                           return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            sent = await fake.replay(events, rewrite_ip=args.rewrite_ip, speed=args.speed)
            print(f"replayed {sent} events", flush=True)
        waiter.cancel()
    await stop.wait()
    await fake.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake FreeSWITCH Event Socket server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8021)
    parser.add_argument("--password", default="ClueCon")
    parser.add_argument("--replay", help="capture file to replay after the first subscription")
    parser.add_argument("--rewrite-ip", help="source address to put into replayed events")
    parser.add_argument("--speed", type=float, default=None,
                        help="replay at recorded pace divided by this (default: flat out)")
    parser.add_argument("--heartbeat", type=float, default=None, help="HEARTBEAT interval, s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
