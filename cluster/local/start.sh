#!/usr/bin/env bash
# Start a real single-machine cluster: a Ray head (token auth) and an MLflow tracking server (sqlite
# backend, proxied artifact storage), every port bound to 127.0.0.1. Stop it with cluster/local/stop.sh.
#
#   cluster/local/start.sh                 # then, in another shell:
#   source outputs/cluster-local/env       # RAY_API_SERVER_ADDRESS, MLFLOW_TRACKING_URI
#   orchestrator submit pretrain tracking=server trainer.max_steps=20
#
# Settings (environment): CLUSTER_DIR (state, logs, MLflow db and artifacts; default outputs/cluster-local),
# RAY_PORT (6379), DASHBOARD_PORT (8265), RAY_CLIENT_PORT (10001), MLFLOW_PORT (5000), NUM_CPUS (all),
# MULTI_NODE (1: other nodes may join), RAY_TEMP_DIR (default $CLUSTER_DIR/ray), LABELS (node labels, default node_group=head), RAY_START_EXTRA (more
# `ray start` flags, e.g. fixed agent ports), START_WAIT_S (seconds to wait for each service, 300). Ray workers on
# the head see ORCHESTRATOR_LOCAL_DIR=$CLUSTER_DIR/scratch.
# More nodes join with cluster/local/join.sh.
# Token: RAY_AUTH_TOKEN if set, else the file RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (generated if absent).
set -euo pipefail

CLUSTER_DIR=$(mkdir -p "${CLUSTER_DIR:-outputs/cluster-local}" && cd "${CLUSTER_DIR:-outputs/cluster-local}" && pwd)
RAY_PORT=${RAY_PORT:-6379}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
RAY_CLIENT_PORT=${RAY_CLIENT_PORT:-10001}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
NUM_CPUS=${NUM_CPUS:-$(nproc)}
RAY_TEMP_DIR=${RAY_TEMP_DIR:-$CLUSTER_DIR/ray}
LABELS=${LABELS:-node_group=head}
RAY=${RAY:-ray}
MLFLOW=${MLFLOW:-mlflow}

for f in ray.pid mlflow.pid; do
  if [[ -f $CLUSTER_DIR/$f ]] && kill -0 "$(cat "$CLUSTER_DIR/$f")" 2>/dev/null; then
    echo "error: a cluster is already running from $CLUSTER_DIR ($f); stop it with cluster/local/stop.sh" >&2
    exit 1
  fi
done
mkdir -p "$RAY_TEMP_DIR" "$CLUSTER_DIR/mlartifacts" "$CLUSTER_DIR/scratch"

# Token authentication on (Ray reads RAY_AUTH_MODE at start); every node and client needs the same token.
export RAY_AUTH_MODE=token
if [[ -z ${RAY_AUTH_TOKEN:-} && ! -s ${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token} ]]; then
  "$RAY" get-auth-token --generate >/dev/null
fi
# Single machine: Ray binds its services to the loopback address instead of the node's LAN address.
# MULTI_NODE=1 keeps Ray's default (the node's address, reachable by nodes that join with join.sh or
# `ray start --address`; token auth guards it): a loopback-only head cannot be joined, because a joining
# node resolves 127.0.0.1 in the head address to its own LAN address.
if [[ ${MULTI_NODE:-0} != 1 ]]; then
  export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
fi
# Inherited by every Ray process of this cluster: "auto" lookups inside jobs (Ray Train's State API
# client, ray.init) then name this cluster even when other Ray instances run on the same machine.
export RAY_ADDRESS=127.0.0.1:$RAY_PORT
# The node's own disk (checkpoint staging); a job's shared files go to cluster.storage_path instead.
export ORCHESTRATOR_LOCAL_DIR=$CLUSTER_DIR/scratch

# `ray start --block` in its own session: stop.sh ends exactly this process group, never other Rays.
setsid "$RAY" start --head --block --disable-usage-stats \
  --port "$RAY_PORT" --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" \
  --ray-client-server-port "$RAY_CLIENT_PORT" --num-cpus "$NUM_CPUS" --temp-dir "$RAY_TEMP_DIR" --labels "$LABELS" \
  ${RAY_START_EXTRA:-} >"$CLUSTER_DIR/ray.log" 2>&1 < /dev/null &
echo $! >"$CLUSTER_DIR/ray.pid"

# Proxied artifacts: clients (and Ray workers on any node) upload through the server, which stores
# them under --artifacts-destination; nothing lands on a worker's local disk.
# The tracking database starts as a copy of the project's cached, migrated empty schema (a fresh sqlite
# file costs the server minutes of Alembic migrations on a loaded 2-core machine before /health answers);
# MLflow 3.17's background job runners (GenAI evaluation jobs) are not used by training runs.
"$(dirname "$(command -v "$MLFLOW")")/python" -c "from orchestrator.tracking.store import prepare_local_store; prepare_local_store('sqlite:///$CLUSTER_DIR/mlflow.db')" 2>/dev/null || true
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$MLFLOW" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
  --backend-store-uri "sqlite:///$CLUSTER_DIR/mlflow.db" \
  --serve-artifacts --artifacts-destination "$CLUSTER_DIR/mlartifacts" >"$CLUSTER_DIR/mlflow.log" 2>&1 < /dev/null &
echo $! >"$CLUSTER_DIR/mlflow.pid"

wait_http() {  # url, expected status codes (regex), what, log
  for _ in $(seq "${START_WAIT_S:-300}"); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)
    [[ $code =~ $2 ]] && return 0
    sleep 1
  done
  echo "error: $3 did not come up; see $4" >&2
  "$(dirname "$0")/stop.sh" >/dev/null 2>&1 || true
  exit 1
}
# The dashboard answers 401 to a request without the token once it is up.
wait_http "http://127.0.0.1:$DASHBOARD_PORT/api/version" '^(200|401)$' "the Ray head" "$CLUSTER_DIR/ray.log"
wait_http "http://127.0.0.1:$MLFLOW_PORT/health" '^200$' "the MLflow server" "$CLUSTER_DIR/mlflow.log"

cat >"$CLUSTER_DIR/env" <<ENV
export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
ENV
echo "Ray dashboard / Jobs API: http://127.0.0.1:$DASHBOARD_PORT (token auth)"
echo "MLflow tracking server:   http://127.0.0.1:$MLFLOW_PORT"
echo "next: source $CLUSTER_DIR/env && orchestrator submit pretrain tracking=server tracking.uri=http://127.0.0.1:$MLFLOW_PORT"
