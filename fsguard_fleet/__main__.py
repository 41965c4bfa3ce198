"""`python -m fsguard_fleet --config PATH`: run the fleet connector alone (`fsguard fleet`)."""

from __future__ import annotations

import sys

from shared.roles import main

if __name__ == "__main__":
    sys.exit(main(["fleet", *sys.argv[1:]]))
