#!/usr/bin/env bash
# Join another Ray node to a running cluster (the way a second host joins): `ray start --address` with its
# own temp dir, CPUs, node label and local scratch directory. Stop it with `CLUSTER_DIR=$NODE_DIR cluster/local/stop.sh`
# (or kill its process group to simulate a node crash).
#
#   MULTI_NODE=1 cluster/local/start.sh          # the head, joinable
#   HEAD=127.0.0.1:6379 NODE_DIR=outputs/node-2 LABELS=node_group=worker cluster/local/join.sh
#
# Settings (environment): HEAD (the head's GCS address, required), NODE_DIR (pid file, log, scratch;
# default outputs/node-2), NUM_CPUS (all), LABELS (`key=value,...`, default node_group=worker),
# RAY_TEMP_DIR (default $NODE_DIR/ray; keep it short: Ray's socket paths must fit 107 bytes),
# RAY_START_EXTRA (more `ray start` flags, e.g. fixed ports). The token is read like start.sh reads it.
# Every Ray worker on this node sees ORCHESTRATOR_LOCAL_DIR=$NODE_DIR/scratch: its node-local disk.
set -euo pipefail

: "${HEAD:?set HEAD to the GCS address of the head, e.g. 127.0.0.1:6379}"
NODE_DIR=$(mkdir -p "${NODE_DIR:-outputs/node-2}" && cd "${NODE_DIR:-outputs/node-2}" && pwd)
NUM_CPUS=${NUM_CPUS:-$(nproc)}
LABELS=${LABELS:-node_group=worker}
RAY_TEMP_DIR=${RAY_TEMP_DIR:-$NODE_DIR/ray}
RAY=${RAY:-ray}

if [[ -f $NODE_DIR/ray.pid ]] && kill -0 "$(cat "$NODE_DIR/ray.pid")" 2>/dev/null; then
  echo "error: a node is already running from $NODE_DIR; stop it with CLUSTER_DIR=$NODE_DIR cluster/local/stop.sh" >&2
  exit 1
fi
mkdir -p "$RAY_TEMP_DIR" "$NODE_DIR/scratch"
# The head must run with MULTI_NODE=1 (start.sh): a loopback-only head cannot be joined.
export RAY_AUTH_MODE=token RAY_ADDRESS=$HEAD
export ORCHESTRATOR_LOCAL_DIR=$NODE_DIR/scratch

setsid "$RAY" start --address "$HEAD" --block --disable-usage-stats \
  --num-cpus "$NUM_CPUS" --temp-dir "$RAY_TEMP_DIR" --labels "$LABELS" \
  ${RAY_START_EXTRA:-} >"$NODE_DIR/ray.log" 2>&1 < /dev/null &
echo $! >"$NODE_DIR/ray.pid"

# Joined once `ray start` reports the node's runtime started (its raylet registered with the GCS).
for _ in $(seq 120); do
  if grep -q "Ray runtime started" "$NODE_DIR/ray.log" 2>/dev/null; then
    echo "node joined $HEAD (labels $LABELS, scratch $NODE_DIR/scratch)"
    exit 0
  fi
  kill -0 "$(cat "$NODE_DIR/ray.pid")" 2>/dev/null || break
  sleep 1
done
echo "error: the node did not join $HEAD; see $NODE_DIR/ray.log" >&2
CLUSTER_DIR=$NODE_DIR "$(dirname "$0")/stop.sh" >/dev/null 2>&1 || true
exit 1
