#!/usr/bin/env bash
# Quickstart, command 2: set up everything (Debian packages included) and run all checks:
# ruff, mypy and the whole test suite. pytest's "no tests ran" (exit 5) is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --system
.venv/bin/ruff check stream_pipeline tests scripts
.venv/bin/ruff format --check stream_pipeline tests scripts
.venv/bin/mypy
set +e
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-auto}" -p no:cacheprovider "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "pytest ran no tests: failing" >&2
  exit 1
fi
exit $rc
