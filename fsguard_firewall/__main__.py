"""`python -m fsguard_firewall --config PATH`: run the firewall role alone (`fsguard firewall`)."""

from __future__ import annotations

import sys

from shared.roles import main

if __name__ == "__main__":
    sys.exit(main(["firewall", *sys.argv[1:]]))
