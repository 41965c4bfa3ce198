"""`python -m fsguard_supervisor.roles ROLE --config P`: how the supervisor starts its children.

The entry point itself is shared/roles.py (so that `python -m fsguard_api` and
`python -m fsguard_firewall` need no other role's package); this module keeps the command
line the supervisor runs, and which takeover.py recognizes in /proc/PID/cmdline.
"""

from __future__ import annotations

import sys

from shared.roles import ROLES, load, main, run_role

__all__ = ["ROLES", "load", "main", "run_role"]

if __name__ == "__main__":
    sys.exit(main())
