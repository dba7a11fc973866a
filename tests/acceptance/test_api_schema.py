"""schemathesis against the /openapi.json of a real `orch serve`: no 5xx, and every answer
matches the schema (status codes, content types, bodies).

Examples are few and the seed is fixed, so the run is short and repeatable; a failure prints
schemathesis's own report with a curl line to reproduce it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from api_server import FakeRepo, Server, base_env

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
TOKEN = "schema-token"
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_server_errors_and_the_schema_holds(
    tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]
) -> None:
    fake = FakeRepo(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}), plan={})
    # No scheduler: the fuzzer's tasks stay where they are filed. A token, so the schema
    # declares the bearer scheme and the fuzzer sends it.
    server = Server(
        tmp_path, base_env(fake.home, migrated_db_url, ORCH_API_TOKEN=TOKEN), scheduler=False
    )
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        made = server.client.post("/tasks", json={"repo": "demo", "title": "seed"}, headers=auth)
        assert made.status_code == 201
        proc = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                CHECKS,
                "--max-examples",
                "12",
                "--seed",
                "20240601",
                "--workers",
                "1",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--request-timeout",
                "30",
                "--suppress-health-check",
                "all",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
            cwd=tmp_path,
        )
        report = proc.stdout + proc.stderr
        assert proc.returncode == 0, report
        assert "passed" in report
    finally:
        code = server.stop()
        fake.close()
    assert code == 0, server.output()
    assert "Traceback" not in server.output()
