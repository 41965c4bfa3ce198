"""`python -m fsguard_firewall --config PATH`: run the firewall role alone."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import msgspec

from shared import config as config_module
from shared.config import Config

from .process import main


def load(path: str) -> Config:
    """shared.config.load_config when it exists; otherwise a plain JSON decode."""
    loader: Any = getattr(config_module, "load_config", None)
    if loader is not None:
        loaded = loader(path)
        if not isinstance(loaded, Config):
            raise TypeError(f"load_config returned {type(loaded).__name__}")
        return loaded
    with open(path, "rb") as fh:
        return msgspec.json.decode(fh.read(), type=Config)


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fsguard_firewall", description=__doc__)
    parser.add_argument("--config", required=True, help="path to the JSON config file")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except (OSError, ValueError, TypeError, msgspec.DecodeError) as exc:
        print(f"fsguard_firewall: cannot load config {args.config!r}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, config.logging.level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return main(config)


if __name__ == "__main__":
    sys.exit(run())
