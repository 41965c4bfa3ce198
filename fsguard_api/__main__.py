"""`python -m fsguard_api --config PATH`: run the API process alone."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import msgspec

from shared import config as config_module
from shared.config import Config


def load(path: str) -> Config:
    """shared.config.load_config when available (env overrides, validation), else plain JSON."""
    loader = getattr(config_module, "load_config", None)
    if loader is not None:
        loaded = loader(path)
        assert isinstance(loaded, Config)
        return loaded
    with open(path, "rb") as fh:
        return msgspec.json.decode(fh.read(), type=Config)


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fsguard_api", description=__doc__)
    parser.add_argument("--config", required=True, metavar="PATH", help="fsguard config file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = load(args.config)
    except (OSError, ValueError, msgspec.DecodeError) as exc:
        print(f"fsguard_api: cannot load config {args.config}: {exc}", file=sys.stderr)
        return 2
    from fsguard_api.process import main

    return main(config)


if __name__ == "__main__":
    sys.exit(run())
