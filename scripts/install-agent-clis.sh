#!/usr/bin/env bash
# Install the pinned coding-agent CLIs that tests/integration/test_llm_backends.py runs for
# real (against a fake model server on 127.0.0.1), into a local npm prefix.
#
#   scripts/install-agent-clis.sh [PREFIX]      default PREFIX: .agent-clis (under the repo)
#
# The binaries land in PREFIX/node_modules/.bin; the tests find them there, or in the
# directory named by ORCH_TEST_AGENT_CLI_DIR. Both packages ship their native binary inside
# a platform package from the npm registry: nothing else is downloaded. aider, a Python
# program, goes into a venv of its own, PREFIX/aider (from PyPI): PREFIX/aider/bin/aider.
set -euo pipefail
cd "$(dirname "$0")/.."

CLAUDE_CODE_VERSION="2.1.330"
CODEX_VERSION="0.169.0"
AIDER_VERSION="0.86.2"

prefix="${1:-.agent-clis}"
command -v npm >/dev/null || { echo "npm not found: install Node.js (apt-get install -y nodejs npm)" >&2; exit 1; }
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --no-save --loglevel=error \
  "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \
  "@openai/codex@${CODEX_VERSION}"
"$prefix/node_modules/.bin/claude" --version
"$prefix/node_modules/.bin/codex" --version
# Its own venv: aider pins dependencies the orchestrator's own may not share.
[ -x "$prefix/aider/bin/aider" ] || python3 -m venv "$prefix/aider"
"$prefix/aider/bin/pip" install -q "aider-chat==${AIDER_VERSION}"
"$prefix/aider/bin/aider" --version
