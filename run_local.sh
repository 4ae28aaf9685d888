#!/usr/bin/env bash
# Start a three-node cluster on this machine, with local workers, in the foreground.
# Ctrl-C or SIGTERM stops every node and worker. Run again and it resumes with its data.
#
#   BASE_HTTP_PORT  first HTTP port (default 8001; nodes use +0, +1, +2)
#   BASE_RAFT_PORT  first Raft port (default 7001)
#   CLUSTER_DIR     data and secret directory (default .cluster)
#   MIN_WORKERS     local workers kept at least (default 0)
#   MAX_WORKERS     local workers at most (default: the number of cores)
#   WQ_SECRET       cluster secret; default: generated once into $CLUSTER_DIR/secret
#   TLS             1: serve the public API over HTTPS with a local CA made once into
#                   $CLUSTER_DIR/tls (clients verify with $CLUSTER_DIR/tls/ca.pem); peers and
#                   workers then use plain internal listeners on BASE_INTERNAL_PORT (8101)
set -euo pipefail
cd "$(dirname "$0")"

BASE_HTTP_PORT=${BASE_HTTP_PORT:-8001}
BASE_RAFT_PORT=${BASE_RAFT_PORT:-7001}
CLUSTER_DIR=${CLUSTER_DIR:-.cluster}
MIN_WORKERS=${MIN_WORKERS:-0}
MAX_WORKERS=${MAX_WORKERS:-$(nproc 2>/dev/null || echo 2)}
BASE_INTERNAL_PORT=${BASE_INTERNAL_PORT:-8101}
TLS=${TLS:-0}
scripts/ensure_venv.sh

mkdir -p "$CLUSTER_DIR"
chmod 700 "$CLUSTER_DIR"
if [ -z "${WQ_SECRET:-}" ]; then
    if [ ! -s "$CLUSTER_DIR/secret" ]; then
        (umask 077; .venv/bin/python -c "import secrets; print(secrets.token_urlsafe(32))" \
            > "$CLUSTER_DIR/secret")
    fi
    WQ_SECRET=$(cat "$CLUSTER_DIR/secret")
fi
export WQ_SECRET

scheme=http
if [ "$TLS" = 1 ]; then
    .venv/bin/python -m provision.ca local "$CLUSTER_DIR/tls"
    scheme=https
fi

pids=()
stop() {
    trap - INT TERM EXIT
    echo "stopping the cluster..."
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait
    exit 0
}
trap stop INT TERM EXIT

# Where peers and workers reach node $1: its public port, or with TLS its internal one.
inside() {
    if [ "$TLS" = 1 ]; then echo "$((BASE_INTERNAL_PORT + $1))"; else echo "$((BASE_HTTP_PORT + $1))"; fi
}
for i in 0 1 2; do
    http=127.0.0.1:$((BASE_HTTP_PORT + i))
    raft=127.0.0.1:$((BASE_RAFT_PORT + i))
    peers=""
    for j in 0 1 2; do
        [ "$j" = "$i" ] && continue
        peers="${peers:+$peers,}127.0.0.1:$((BASE_RAFT_PORT + j))=http://127.0.0.1:$(inside "$j")"
    done
    tls=()
    if [ "$TLS" = 1 ]; then
        tls=(--tls-cert "$CLUSTER_DIR/tls/node.pem" --tls-key "$CLUSTER_DIR/tls/node.key"
             --internal-http "127.0.0.1:$(inside "$i")")
    fi
    .venv/bin/python -m node --id "node$((i + 1))" --http "$http" --raft "$raft" \
        --peers "$peers" --data-dir "$CLUSTER_DIR/node$((i + 1))" \
        --min-workers "$MIN_WORKERS" --max-workers "$MAX_WORKERS" ${tls[@]+"${tls[@]}"} &
    pids+=($!)
done
cacert=""
if [ "$TLS" = 1 ]; then cacert="--cacert $CLUSTER_DIR/tls/ca.pem "; fi

cat <<INFO
cluster starting; nodes:
  $scheme://127.0.0.1:$BASE_HTTP_PORT  $scheme://127.0.0.1:$((BASE_HTTP_PORT + 1))  $scheme://127.0.0.1:$((BASE_HTTP_PORT + 2))
data in $CLUSTER_DIR, cluster secret in $CLUSTER_DIR/secret (unless WQ_SECRET was given)
try:
  curl -s ${cacert}-X PUT --data-binary @README.md '$scheme://127.0.0.1:$BASE_HTTP_PORT/enqueue?iterations=1000'
  curl -s ${cacert}-X POST '$scheme://127.0.0.1:$((BASE_HTTP_PORT + 1))/pullCompleted?top=5'
Ctrl-C stops every node and worker.
INFO
wait
