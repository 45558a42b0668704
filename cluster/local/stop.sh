#!/usr/bin/env bash
# Stop the cluster that cluster/local/start.sh started from the same CLUSTER_DIR: its Ray head and its
# MLflow server (each runs in its own process session). Other Ray instances on the machine are untouched.
set -uo pipefail
CLUSTER_DIR=${CLUSTER_DIR:-outputs/cluster-local}

stop_group() {  # pid file
  local pidfile=$1 pid
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 20); do
      pgrep -g "$pid" >/dev/null 2>&1 || break
      sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}
stop_group "$CLUSTER_DIR/mlflow.pid"
stop_group "$CLUSTER_DIR/ray.pid"
echo "stopped the cluster of $CLUSTER_DIR"
