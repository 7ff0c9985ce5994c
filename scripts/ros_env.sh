#!/usr/bin/env bash
# Run a command with the built workspace sourced and DDS kept on this machine.
#   scripts/ros_env.sh .venv/bin/python -m pytest
set -eo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$ROOT/install/setup.sh" ]; then
  echo "[ros_env] $ROOT/install/setup.sh missing: run 'make setup' first" >&2
  exit 1
fi
# colcon's setup scripts read unset variables; source them without nounset.
set +u
# shellcheck disable=SC1091
. "$ROOT/install/setup.sh"
# Discovery stays on the loopback interface: no multicast to the network.
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export PATH="$ROOT/.venv/bin:$PATH"
exec "$@"
