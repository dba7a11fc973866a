"""The exit codes of `orch`: 0 ok, 1 failure, 2 usage error."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
