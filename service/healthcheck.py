"""Container health check: exit 0 when this host's server answers ``GET /livez``, 1 otherwise.

A module rather than an inline ``python -c "…"`` because podman's Docker API splits a compose
``healthcheck.test`` on spaces, which breaks any argument that contains one.
"""

import os
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("LCS_PORT", "8000")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2) as r:
            return 0 if r.status == 200 else 1
    except OSError as e:
        print(f"livez on port {port}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
