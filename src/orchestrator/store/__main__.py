"""``python -m orchestrator.store revision -m MESSAGE [--autogenerate]``: a new migration."""

from __future__ import annotations

import sys

from orchestrator.store.migrate import main

sys.exit(main())
