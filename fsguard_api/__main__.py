"""`python -m fsguard_api --config PATH`: run the API process alone."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from shared.config import ConfigError, load_config
from shared.logs import setup_logging


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fsguard_api", description=__doc__)
    parser.add_argument("--config", required=True, metavar="PATH", help="fsguard config file")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"fsguard_api: {exc}", file=sys.stderr)
        return 2
    setup_logging("api", config.logging.format, config.logging.level)
    from fsguard_api.process import main

    return main(config)


if __name__ == "__main__":
    sys.exit(run())
