#!/usr/bin/env bash
# Measures `biref serve` under load with wrk on this machine: requests/s and latency percentiles
# at two model sizes with one instance and with two behind nginx (deploy/nginx/biref.conf), the
# resident memory with 1 and 4 workers, and dynamic batching against none. Every request runs
# the model (no result cache). The numbers in docs/serve.md come from this script.
#
#   scripts/bench-serve.sh [SECONDS_PER_RUN]        (default 20; needs build/biref, wrk, nginx)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
BIN=build/biref
MODEL=${BIREF_BENCH_MODEL:-synthetic:swin_v1_t}
IMG=tests/golden/pipeline/chelsea.png
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_serve LOG ARGS... -> sets PORT once the server listens (not in a subshell: PIDS must keep
# the server's pid)
start_serve() {
  local log=$1
  shift
  PORT=$(free_port)
  "$BIN" serve --model "$MODEL" --port "$PORT" --cache-mb 0 "$@" >"$log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 600); do
    grep -q "listening on" "$log" && return
    sleep 0.1
  done
  echo "biref serve did not start: $(cat "$log")" >&2
  exit 1
}

start_nginx() {
  local port=$1
  shift
  local dir=$WORK/nginx-$port servers=""
  mkdir -p "$dir"
  for p in "$@"; do servers+="    server 127.0.0.1:$p max_fails=1 fail_timeout=5s;\n"; done
  awk -v servers="$servers" '
    /^ *server 127\.0\.0\.1:[0-9]+ / { if (!done) { printf "%s", servers; done = 1 } next }
    { print }' deploy/nginx/biref.conf | sed "s/listen [0-9]*;/listen 127.0.0.1:$port;/" \
    >"$dir/biref.conf"
  local user=""
  [ "$(id -u)" -eq 0 ] && user="user root root;"
  cat >"$dir/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $dir/nginx.pid; error_log $dir/error.log warn; $user
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $dir/body; proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/f; uwsgi_temp_path $dir/u; scgi_temp_path $dir/s;
  include $dir/biref.conf; }
CONF
  /usr/sbin/nginx -p "$dir" -c "$dir/nginx.conf" >/dev/null 2>&1 &
  PIDS+=($!)
  sleep 0.5
}

# run_wrk PORT QUERY CONNECTIONS -> "rps p50 p99"
run_wrk() {
  local out
  out=$(BIREF_WRK_BODY=$IMG wrk -t"$(($3 < 2 ? $3 : 2))" -c"$3" -d"${SECS}s" --timeout 60s --latency \
    -s scripts/wrk-post.lua "http://127.0.0.1:$1/v1/segment?$2" 2>&1)
  local rps p50 p99 st
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  st=$(echo "$out" | awk '/^statuses/ {$1=""; print}')
  echo "$rps req/s  p50 $p50  p99 $p99  ($st )"
}

rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

echo "machine: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'), $(nproc) cores"
echo "model: $MODEL, image: $IMG, $SECS s per run, wrk -t2, no result cache"
for size in 256 1024; do
  start_serve "$WORK/a.log" --size "${size}x${size}" --queue 64
  p1=$PORT
  run_wrk "$p1" "output=mask" 1 >/dev/null  # warm-up: the plans and primitives of this size
  echo "${size}x${size}, 1 instance,  4 connections: $(run_wrk "$p1" "output=mask" 4)"
  start_serve "$WORK/b.log" --size "${size}x${size}" --queue 64
  p2=$PORT
  run_wrk "$p2" "output=mask" 1 >/dev/null
  np=$(free_port)
  start_nginx "$np" "$p1" "$p2"
  echo "${size}x${size}, 2 instances, 4 connections: $(run_wrk "$np" "output=mask" 4)"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
done

for w in 1 4; do
  start_serve "$WORK/w.log" --size 1024x1024 --workers "$w" --queue 64
  p=$PORT
  run_wrk "$p" "output=mask" 4 >/dev/null
  pid=${PIDS[-1]}
  echo "1024x1024, --workers $w: RSS $(rss_mb "$pid") MiB after $SECS s of 4 connections"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  PIDS=()
done

for b in 1 4; do
  start_serve "$WORK/batch.log" --size 256x256 --max-batch "$b" --max-wait-ms 20 --queue 64
  p=$PORT
  run_wrk "$p" "output=mask" 1 >/dev/null
  echo "256x256, --max-batch $b, 8 connections: $(run_wrk "$p" "output=mask" 8)"
  kill "${PIDS[-1]}"
  wait 2>/dev/null || true
  PIDS=()
done
