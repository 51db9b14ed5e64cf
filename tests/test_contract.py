"""The OpenAPI contract, enforced: Schemathesis runs every check (server errors, status codes, content types,
response schemas and headers, positive and negative data, auth, Allow headers, use after free) against a real
``lcs serve`` for a bounded time. schemathesis.toml says the one place it is narrowed, and why."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_schemathesis_finds_no_failure_against_a_real_server(service_bundle, tmp_path, start_server):
    # no job workers: accepted jobs stay queued (the contract is HTTP; training them would only load the CPU)
    s = start_server(service_bundle, tmp_path / "data", "test-token", "--max-n", "16", "--job-workers", "0")
    out = subprocess.run(
        [
            *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(ROOT / "schemathesis.toml"), "run"),
            f"{s.url}/openapi.json",
            *("--checks", "all", "--max-time", "40", "--workers", "1", "--seed", "1", "--no-color"),
            *("-H", f"Authorization: Bearer {s.token}"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = out.stdout[-6000:] + out.stderr[-2000:]
    assert out.returncode == 0, report
    assert "unhandled error" not in s.logtext()  # a 500 the checks would call a failure, seen from the server side
