#!/usr/bin/env bash
# Quickstart, command 2: set up everything (Debian packages included) and run all checks:
# ruff, mypy and the whole test suite: the main run, then the cluster tests (real Ray nodes) in
# a network + PID namespace of their own (scripts/test_cluster.sh; they need root for that).
# Arguments go to the main run. pytest's "no tests ran" (exit 5) is a failure, in either run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --system
.venv/bin/ruff check stream_pipeline tests scripts
.venv/bin/ruff format --check stream_pipeline tests scripts
.venv/bin/mypy
set +e
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-auto}" -p no:cacheprovider -m "not cluster" "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "pytest ran no tests: failing" >&2
  exit 1
fi
if [[ $rc -ne 0 ]]; then
  exit $rc
fi
# Exits 1 itself when it ran no tests.
exec scripts/test_cluster.sh
