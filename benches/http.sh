#!/usr/bin/env bash
# benches/http.sh — `canopy serve` against nginx (sendfile) serving the same object
# files, side by side in one run: requests/s and server CPU per request for objects of
# several sizes at 1 and 32 connections, and the zstd form (canopy only) of a
# compressible object. The load generator is wrk, pinned with taskset to its own CPU;
# both servers are pinned to the other. Prints a table (also to target/bench-http.txt).
# Figures are reported, never asserted. See benches/README.md.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
usage: benches/http.sh [options]

Serves one store with `canopy serve` and its objects/ directory with nginx (one worker
per server CPU, sendfile on, tcp_nopush, no access log), and loads each with wrk on the
same objects.

options:
  --runs N            repetitions; medians are reported (default: 3)
  --duration D        each wrk run (default: 5s)
  --sizes LIST        object sizes, comma-separated (default: 4K,128K,4M)
  --connections LIST  wrk connection counts, comma-separated (default: 1,32)
  --server-cpus LIST  CPUs both servers are pinned to (taskset -c; default: 0)
  --wrk-cpus LIST     CPUs wrk is pinned to (default: 1)
  --out FILE          also write the report here (default: target/bench-http.txt)
  --no-build          use target/release/canopy as it is
  --canopy PATH       use this canopy binary (implies --no-build)
  --keep              keep the scratch directory
  -h, --help          this text

Needs wrk, nginx and curl (installed with apt-get when missing, as root). Only
127.0.0.1 is used.
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
RUNS=3
DURATION=5s
SIZES=4K,128K,4M
CONNS=1,32
SERVER_CPUS=0
WRK_CPUS=1
OUT=$ROOT/target/bench-http.txt
BUILD=1
CANOPY=$ROOT/target/release/canopy
KEEP=0
WAIT_TIMEOUT=60
while (($#)); do
    case $1 in
        --runs) RUNS=${2:?}; shift 2 ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --sizes) SIZES=${2:?}; shift 2 ;;
        --connections) CONNS=${2:?}; shift 2 ;;
        --server-cpus) SERVER_CPUS=${2:?}; shift 2 ;;
        --wrk-cpus) WRK_CPUS=${2:?}; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --canopy) CANOPY=${2:?}; BUILD=0; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
[[ $DURATION =~ ^[1-9][0-9]*[smh]?$ ]] || die "--duration must look like 5s"
[[ $CANOPY = /* ]] || CANOPY=$PWD/$CANOPY
[[ $OUT = /* ]] || OUT=$PWD/$OUT
IFS=, read -r -a SIZE_LIST <<<"$SIZES"
IFS=, read -r -a CONN_LIST <<<"$CONNS"

ensure_packages wrk:wrk nginx:nginx-light curl:curl taskset:util-linux
require_tools wrk nginx curl taskset sha256sum
build_canopy

SERVER_PID= NGINX_PID=
release() {
    stop_pid "$SERVER_PID"
    stop_pid "$NGINX_PID"
}
scratch http
LOGS=$TMP/logs
mkdir -p "$LOGS"
FAILED_LOG=$ROOT/target/bench-http-failed.log
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- objects
say "making objects: ${SIZE_LIST[*]} of random bytes, 128K of text"
S=$TMP/store
mkdir -p "$TMP/src"
for size in "${SIZE_LIST[@]}"; do
    bytes=$(numfmt --from=iec "$size") || die "cannot read size $size"
    head -c "$bytes" /dev/urandom >"$TMP/src/random-$size"
done
# Text compresses as real files do: lines of words and numbers.
awk 'BEGIN { for (i = 0; i < 4000; i++) printf "line %d of a text that compresses %x\n", i, i * 7919 }' \
    >"$TMP/src/text-128K"
truncate -s 128K "$TMP/src/text-128K"
"$CANOPY" --store "$S" init >"$LOGS/init.log" 2>&1 || fail_step "canopy init failed" "$LOGS/init.log"
"$CANOPY" --store "$S" import dir "$TMP/src" --name objects >"$LOGS/import.log" 2>&1 ||
    fail_step "canopy import dir failed" "$LOGS/import.log"
declare -A ID=()
for f in "$TMP"/src/*; do
    ID[$(basename "$f")]=$(sha256sum "$f" | cut -d' ' -f1)
done

# ---------------------------------------------------------------- servers
PORT=$(free_port) || die "no free port"
start_serve_pinned "$S" "$PORT" "$SERVER_CPUS"
NGINX_PORT=$(free_port "$PORT") || die "no free port"
any=${ID[text-128K]}
# One nginx worker per server CPU, as canopy's runtime has one thread per CPU it may
# run on: with `auto`, nginx would run a worker per online CPU on the pinned ones, and
# on a busy machine two runnable workers get twice the CPU share of one (at 32
# connections 4 KiB, nginx answered ~21,000 r/s with 2 workers on one CPU, ~13,000 with
# 1, at load 7), which measures the scheduler rather than the server.
NGINX_WORKERS=$(taskset -c "$SERVER_CPUS" nproc)
start_nginx_pinned() {
    start_nginx "$TMP/nginx" "$NGINX_PORT" "$S/objects" "/${any:0:2}/${any:2}" \
        'access_log off; tcp_nopush on; keepalive_requests 1000000;'
    pin_nginx "$SERVER_CPUS"
}
start_nginx_pinned
canopy_url() { echo "http://127.0.0.1:$PORT/v1/objects/${ID[$1]}"; }
nginx_url() { local id=${ID[$1]}; echo "http://127.0.0.1:$NGINX_PORT/${id:0:2}/${id:2}"; }
for name in "${!ID[@]}"; do
    for u in "$(canopy_url "$name")" "$(nginx_url "$name")"; do
        [[ $(curl -sf "$u" | sha256sum | cut -d' ' -f1) == "${ID[$name]}" ]] ||
            die "$u does not serve $name"
    done
done
curl -sf -H 'Accept-Encoding: zstd' -D "$LOGS/zstd.h" -o "$TMP/text.zst" "$(canopy_url text-128K)"
grep -qi '^content-encoding: zstd' "$LOGS/zstd.h" || die "canopy did not compress the text object"
# A zstd form computed once has a Content-Length; one compressed per request is chunked.
ZSTD_LENGTH="with a Content-Length"
grep -qi '^content-length:' "$LOGS/zstd.h" || ZSTD_LENGTH="chunked, without a Content-Length"
ZSTD_BYTES=$(stat -c %s "$TMP/text.zst")

# ---------------------------------------------------------------- measuring
# load KEY CONNS URL PID [HEADER]: one wrk run; records KEY_rps and KEY_cpu (server CPU
# microseconds per request) and KEY_share (server CPU cores busy).
load() {
    local key=$1 conns=$2 url=$3 pid=$4 hdr=() c0 c1 t0 t1 log=$LOGS/$1.log n
    (($# > 4)) && hdr=(-H "$5")
    c0=$(cpu_ticks "$pid"); t0=$EPOCHREALTIME
    taskset -c "$WRK_CPUS" wrk -t1 -c"$conns" -d"$DURATION" --timeout 10s --latency "${hdr[@]}" "$url" >"$log" 2>&1 ||
        fail_step "wrk failed ($key)" "$log"
    c1=$(cpu_ticks "$pid"); t1=$EPOCHREALTIME
    grep -qE 'Non-2xx|Socket errors' "$log" && die "wrk saw errors ($key): $(grep -E 'Non-2xx|Socket errors' "$log")"
    n=$(awk '/requests in/ { print $1 }' "$log")
    record "${key}_rps" "$(awk '/^Requests\/sec:/ { print $2 }' "$log")"
    record "${key}_cpu" "$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.2f", c / hz / n * 1e6 }')"
    # The median latency, in µs: what a request costs when the scheduler does not make
    # the server wait for a CPU (on a busy machine the mean is mostly those waits).
    record "${key}_p50" "$(awk '$1 == "50%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
        print v * (u == "s" ? 1e6 : u == "ms" ? 1e3 : 1) }' "$log")"
    record "${key}_share" "$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", c / hz / (b - a) }')"
}
LOADS=()
for ((run = 1; run <= RUNS; run++)); do
    LOADS+=("$(cut -d' ' -f1 /proc/loadavg)")
    say "run $run/$RUNS (load ${LOADS[-1]})"
    for size in "${SIZE_LIST[@]}"; do
        for c in "${CONN_LIST[@]}"; do
            # Alternate who goes first, so neither always meets the other's leftovers.
            if ((run % 2)); then
                load "c_${size}_$c" "$c" "$(canopy_url "random-$size")" "$SERVER_PID"
                load "n_${size}_$c" "$c" "$(nginx_url "random-$size")" "$NGINX_PID"
            else
                load "n_${size}_$c" "$c" "$(nginx_url "random-$size")" "$NGINX_PID"
                load "c_${size}_$c" "$c" "$(canopy_url "random-$size")" "$SERVER_PID"
            fi
            # The two measured back to back: their ratio drifts less with the load
            # than the ratio of medians taken minutes apart.
            record "p_${size}_$c" "$(ratio "${VALS[c_${size}_${c}_rps]##* }" "${VALS[n_${size}_${c}_rps]##* }")"
        done
    done
    for c in "${CONN_LIST[@]}"; do
        load "z_$c" "$c" "$(canopy_url text-128K)" "$SERVER_PID" 'Accept-Encoding: zstd'
        load "t_$c" "$c" "$(nginx_url text-128K)" "$NGINX_PID"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
grep -q . "$LOGS/serve.err" && say "canopy serve wrote to stderr: $(tail -n 3 "$LOGS/serve.err")"

# ---------------------------------------------------------------- report
report() {
    local rev size c
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || rev="$rev+dirty"
    echo "canopy serve vs nginx — $(date -u +%Y-%m-%dT%H:%M:%SZ), canopy $rev"
    echo "host: $(uname -srm), $(nproc) cpus; servers on cpu $SERVER_CPUS, wrk 4.1 ($(command -v wrk)) -t1 --timeout 10s on cpu $WRK_CPUS, -d$DURATION"
    echo "nginx $(nginx -v 2>&1 | sed 's#.*/##'): worker_processes $NGINX_WORKERS (one per server CPU), sendfile on, tcp_nopush on, access_log off"
    echo "load average before/after: $LOAD_BEFORE / $LOAD_AFTER; at each run's start: ${LOADS[*]}"
    echo "figures: median of $RUNS runs; ratio = canopy / nginx (requests/s: above 1 is better; CPU: below 1 is better)"
    echo
    printf '%-8s %5s | %10s %10s %6s %6s | %9s %9s %6s | %6s %6s\n' object conns "canopy r/s" "nginx r/s" ratio \
        paired "canopy µs" "nginx µs" ratio "c cpu" "n cpu"
    printf '%s\n' "--------------------------------------------------------------------------------------------------"
    for size in "${SIZE_LIST[@]}"; do
        for c in "${CONN_LIST[@]}"; do
            printf '%-8s %5s | %10.0f %10.0f %6s %6.2f | %9.1f %9.1f %6s | %6.2f %6.2f\n' "$size" "$c" \
                "$(m "c_${size}_${c}_rps")" "$(m "n_${size}_${c}_rps")" \
                "$(ratio "$(m "c_${size}_${c}_rps")" "$(m "n_${size}_${c}_rps")")" "$(m "p_${size}_${c}")" \
                "$(m "c_${size}_${c}_cpu")" "$(m "n_${size}_${c}_cpu")" \
                "$(ratio "$(m "c_${size}_${c}_cpu")" "$(m "n_${size}_${c}_cpu")")" \
                "$(m "c_${size}_${c}_share")" "$(m "n_${size}_${c}_share")"
        done
    done
    for c in "${CONN_LIST[@]}"; do
        printf '%-8s %5s | %10.0f %10.0f %6s %6s | %9.1f %9.1f %6s | %6.2f %6.2f\n' "zstd" "$c" \
            "$(m "z_${c}_rps")" "$(m "t_${c}_rps")" "$(ratio "$(m "z_${c}_rps")" "$(m "t_${c}_rps")")" - \
            "$(m "z_${c}_cpu")" "$(m "t_${c}_cpu")" "$(ratio "$(m "z_${c}_cpu")" "$(m "t_${c}_cpu")")" \
            "$(m "z_${c}_share")" "$(m "t_${c}_share")"
    done
    echo
    printf '%-8s %5s | %12s %12s %6s\n' object conns "canopy p50 µs" "nginx p50 µs" ratio
    printf '%s\n' "-------------------------------------------------------"
    for size in "${SIZE_LIST[@]}"; do
        for c in "${CONN_LIST[@]}"; do
            printf '%-8s %5s | %12.0f %12.0f %6s\n' "$size" "$c" \
                "$(m "c_${size}_${c}_p50")" "$(m "n_${size}_${c}_p50")" \
                "$(ratio "$(m "c_${size}_${c}_p50")" "$(m "n_${size}_${c}_p50")")"
        done
    done
    echo
    echo "objects: random bytes of each size (sent as they are); zstd: a 128 KiB text object that"
    echo "canopy sends as $ZSTD_BYTES bytes of zstd ($ZSTD_LENGTH; Accept-Encoding: zstd), against nginx"
    echo "sending it plain."
    echo "paired: median over runs of each run's requests/s ratio (the two measured back to back)."
    echo "µs: server CPU (user+system, all threads, /proc/PID/stat) per request answered."
    echo "cpu: server CPU cores busy during the run; under load the scheduler's share, not"
    echo "the server, often bounds requests/s: compare µs per request first."
    echo "p50: wrk's median latency (below 1 is better); at 1 connection requests/s is one over"
    echo "the mean latency, which on a busy machine is mostly the tail of waits for a CPU."
    local k
    printf 'every run:'
    for k in $(printf '%s\n' "${!VALS[@]}" | sort); do
        printf ' %s=[%s]' "$k" "$(echo ${VALS[$k]} | tr ' ' ,)"
    done
    echo
    local args=()
    ((BUILD)) || args+=(--canopy "$CANOPY")
    ((RUNS != 3)) && args+=(--runs "$RUNS")
    [[ $DURATION != 5s ]] && args+=(--duration "$DURATION")
    [[ $SIZES != 4K,128K,4M ]] && args+=(--sizes "$SIZES")
    [[ $CONNS != 1,32 ]] && args+=(--connections "$CONNS")
    [[ $SERVER_CPUS != 0 ]] && args+=(--server-cpus "$SERVER_CPUS")
    [[ $WRK_CPUS != 1 ]] && args+=(--wrk-cpus "$WRK_CPUS")
    echo "reproduce: benches/http.sh ${args[*]}"
}
mkdir -p "$(dirname "$OUT")"
report | tee "$OUT"
say "report written to $OUT"
