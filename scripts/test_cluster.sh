#!/usr/bin/env bash
# The cluster tests (tests/cluster, marker `cluster`): real `ray start` nodes on this machine.
# They run inside a private network + PID namespace (unshare, needs root or CAP_SYS_ADMIN): there
# Ray keeps to 127.0.0.1 instead of binding the host's network, and `ray stop` cannot reach any
# other Ray on the machine (tests/support/raycluster.py). Arguments go to pytest.
# pytest's "no tests ran" (exit 5) is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v ip >/dev/null; then
  echo "scripts/test_cluster.sh: needs the ip command (apt-get install iproute2)" >&2
  exit 1
fi
if ! err=$(unshare -n -p -f --mount-proc true 2>&1); then
  echo "scripts/test_cluster.sh: cannot create a network + PID namespace (unshare -n -p -f --mount-proc): ${err}" >&2
  echo "The cluster tests need root or CAP_SYS_ADMIN (in a container: --privileged or --cap-add SYS_ADMIN)." >&2
  exit 1
fi
# The auth settings go into pytest's environment from the start: Ray reads them once per process,
# at its first import, so an in-process driver must have them before any test module imports ray.
RAY_AUTH_TOKEN=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN RAY_USAGE_STATS_ENABLED=0
# bash stays pid 1 of the namespace (pytest is not its last command, so it is not exec'd): it
# reaps the orphans of killed nodes. When it exits, the kernel kills whatever is left inside.
exec unshare -n -p -f --mount-proc bash -c '
ip link set lo up || { echo "scripts/test_cluster.sh: cannot bring lo up in the namespace" >&2; exit 1; }
# tests/cluster unless the arguments name paths of their own (tests/cluster/test_x.py::test_y).
paths=(tests/cluster)
for arg in "$@"; do [[ $arg == tests/* ]] && paths=(); done
SP_RAY_NETNS=1 .venv/bin/python -m pytest -p no:cacheprovider -m cluster "${paths[@]}" "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "pytest ran no cluster tests: failing" >&2
  exit 1
fi
exit $rc
' test_cluster.sh "$@"
