#!/usr/bin/env bash
# Install the pinned coding-agent CLIs that tests/integration/test_llm_backends.py runs for
# real (against a fake model server on 127.0.0.1), into a local npm prefix.
#
#   scripts/install-agent-clis.sh [PREFIX]      default PREFIX: .agent-clis (under the repo)
#   AIDER_PYTHON=/usr/bin/python3.11 scripts/install-agent-clis.sh   aider's interpreter
#
# The binaries land in PREFIX/node_modules/.bin; the tests find them there, or in the
# directory named by ORCH_TEST_AGENT_CLI_DIR. Both packages ship their native binary inside
# a platform package from the npm registry: nothing else is downloaded. aider, a Python
# program, goes into a venv of its own, PREFIX/aider (from PyPI): PREFIX/aider/bin/aider,
# made by AIDER_PYTHON (default python3). Most of an aider run is its start-up (imports),
# so the interpreter's build matters: Debian's PGO-built python3.11 ran the aider tests
# with 18% less CPU than pyenv's 3.11.7, built without PGO. A venv made by another
# interpreter is made again, so changing AIDER_PYTHON takes effect on an existing PREFIX.
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
aider_python="${AIDER_PYTHON:-python3}"
venv="$prefix/aider"
# A venv's bin/python is a symlink to the interpreter that made it.
want="$("$aider_python" -c 'import os, sys; print(os.path.realpath(sys.executable))')"
if [ -e "$venv" ] && [ "$(readlink -f "$venv/bin/python" || true)" != "$want" ]; then
  echo "== remaking $venv with $want" >&2
  rm -rf "$venv"
fi
[ -x "$venv/bin/aider" ] || "$aider_python" -m venv "$venv"
"$venv/bin/pip" install -q "aider-chat==${AIDER_VERSION}"
"$venv/bin/aider" --version
