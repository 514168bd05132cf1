#!/usr/bin/env bash
# Quickstart, command 1: set up, then run the shipped model on the synthetic street scene.
# Extra arguments go to `stream-pipeline run` (e.g. --source video.mp4).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
"$here/scripts/setup.sh"
exec "$here/.venv/bin/stream-pipeline" run "$@"
