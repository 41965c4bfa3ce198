"""`python -m fsguard_firewall --config PATH`: run the firewall role alone."""

from __future__ import annotations

import argparse
import sys

from shared.config import ConfigError, load_config
from shared.logs import setup_logging

from .process import main


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fsguard_firewall", description=__doc__)
    parser.add_argument("--config", required=True, help="path to the JSON config file")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"fsguard_firewall: {exc}", file=sys.stderr)
        return 2
    setup_logging("firewall", config.logging.format, config.logging.level)
    return main(config)


if __name__ == "__main__":
    sys.exit(run())
