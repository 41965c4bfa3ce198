"""`python -m fsguard_api --config PATH`: run the API role alone (same as `fsguard api`)."""

from __future__ import annotations

import sys

from shared.roles import main

if __name__ == "__main__":
    sys.exit(main(["api", *sys.argv[1:]]))
