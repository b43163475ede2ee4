#!/usr/bin/env bash
# benches/hosts.sh — many hosts reading a root cold from one server: N simulated hosts
# each fetch every object of a root once (what a host with an empty cache fetches when
# it reads every file), from `canopy serve` and from nginx (sendfile) serving the same
# object files, side by side in one run. Reports total time, server CPU per host and
# requests/s for each N, and where requests/s stop growing (saturation). The load
# generator is h2load (nghttp2, HTTP/1.1, one thread, one connection per host, each
# walking the object list once), pinned to its own CPU; both servers to the other. Figures are
# reported, never asserted. See benches/README.md.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
usage: benches/hosts.sh [options] [PACKAGE...]

Assembles a root from real .debs (the closure of PACKAGES; default: the set of
benches/mount.sh), then for each host count N lets N connections (one per simulated
host) fetch N copies of the root's object list from `canopy serve` and from nginx
serving the store's objects/ directory.

options:
  --hosts LIST        host counts, comma-separated (default: 1,10,50,100)
  --runs N            repetitions; medians are reported (default: 3)
  --server-cpus LIST  CPUs both servers are pinned to (taskset -c; default: 0)
  --load-cpus LIST    CPUs the load generator (h2load) is pinned to (default: 1)
  --debs DIR          .deb cache (default: target/bench-debs)
  --no-closure        the PACKAGES exactly, not their dependency closure
  --out FILE          also write the report here (default: target/bench-hosts.txt)
  --no-build          use target/release/canopy as it is
  --canopy PATH       use this canopy binary (implies --no-build)
  --keep              keep the scratch directory
  -h, --help          this text

Needs root only to install missing tools (h2load, nginx, curl). Only 127.0.0.1 is used.
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
DEFAULT_PACKAGES=(bash coreutils python3.11-minimal perl-base grep sed findutils tar gzip)
HOSTS=1,10,50,100
RUNS=3
SERVER_CPUS=0
LOAD_CPUS=1
DEBS=$ROOT/target/bench-debs
CLOSURE=1
OUT=$ROOT/target/bench-hosts.txt
BUILD=1
CANOPY=$ROOT/target/release/canopy
KEEP=0
WAIT_TIMEOUT=60
PACKAGES=()
while (($#)); do
    case $1 in
        --hosts) HOSTS=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        --server-cpus) SERVER_CPUS=${2:?}; shift 2 ;;
        --load-cpus) LOAD_CPUS=${2:?}; shift 2 ;;
        --debs) DEBS=${2:?}; shift 2 ;;
        --no-closure) CLOSURE=0; shift ;;
        --out) OUT=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --canopy) CANOPY=${2:?}; BUILD=0; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) PACKAGES+=("$1"); shift ;;
    esac
done
((${#PACKAGES[@]})) || PACKAGES=("${DEFAULT_PACKAGES[@]}")
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
IFS=, read -r -a HOST_LIST <<<"$HOSTS"
for h in "${HOST_LIST[@]}"; do
    [[ $h =~ ^[1-9][0-9]*$ ]] || die "--hosts: '$h' is not a positive integer"
done
[[ $CANOPY = /* ]] || CANOPY=$PWD/$CANOPY
[[ $OUT = /* ]] || OUT=$PWD/$OUT
[[ $DEBS = /* ]] || DEBS=$PWD/$DEBS

ensure_packages h2load:nghttp2-client nginx:nginx-light curl:curl taskset:util-linux dpkg-deb:dpkg-dev
require_tools h2load nginx curl taskset sha256sum apt-get apt-cache dpkg-deb find sort awk
build_canopy
fetch_debs

SERVER_PID= NGINX_PID=
release() {
    stop_pid "$SERVER_PID"
    stop_pid "$NGINX_PID"
}
scratch hosts
LOGS=$TMP/logs
mkdir -p "$LOGS"
FAILED_LOG=$ROOT/target/bench-hosts-failed.log
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- the root and its objects
S=$TMP/store
say "store: import $NPKG .debs, assemble base"
"$CANOPY" --store "$S" init >"$LOGS/init.log" 2>&1 || fail_step "canopy init failed" "$LOGS/init.log"
"$CANOPY" --store "$S" import deb "${DEBFILES[@]}" >"$LOGS/import.log" 2>&1 ||
    fail_step "canopy import failed" "$LOGS/import.log"
"$CANOPY" --store "$S" assemble base "${PKGNAMES[@]}" "${ASSEMBLE_FLAGS[@]}" --no-configure \
    >"$LOGS/assemble.log" 2>&1 || fail_step "canopy assemble failed" "$LOGS/assemble.log"
"$CANOPY" --store "$S" checkout base "$TMP/tree" >"$LOGS/checkout.log" 2>&1 ||
    fail_step "canopy checkout failed" "$LOGS/checkout.log"
# A file's object id is the SHA-256 of its bytes: the distinct ids are what a host with
# an empty cache fetches when it reads every file.
find "$TMP/tree" -type f -print0 | xargs -0 sha256sum | awk '{ print $1 }' | sort -u >"$TMP/ids"
NOBJ=$(wc -l <"$TMP/ids")
OBJ_BYTES=$(while read -r id; do stat -c %s "$S/objects/${id:0:2}/${id:2}"; done <"$TMP/ids" |
    awk '{ s += $1 } END { print s }') || die "an object of the root is not a file in $S/objects"
rm -rf "$TMP/tree"

# ---------------------------------------------------------------- servers
PORT=$(free_port) || die "no free port"
start_serve_pinned "$S" "$PORT" "$SERVER_CPUS"
NGINX_PORT=$(free_port "$PORT") || die "no free port"
first=$(head -n 1 "$TMP/ids")
start_nginx "$TMP/nginx" "$NGINX_PORT" "$S/objects" "/${first:0:2}/${first:2}" \
    'access_log off; tcp_nopush on; keepalive_requests 1000000;'
pin_nginx "$SERVER_CPUS"
for u in "http://127.0.0.1:$PORT/v1/objects/$first" "http://127.0.0.1:$NGINX_PORT/${first:0:2}/${first:2}"; do
    [[ $(curl -sf "$u" | sha256sum | cut -d' ' -f1) == "$first" ]] || die "$u does not serve object $first"
done
# Each simulated host asks for every object once, in the list's order.
awk -v p="$PORT" '{ print "http://127.0.0.1:" p "/v1/objects/" $1 }' "$TMP/ids" >"$TMP/canopy.urls"
awk -v p="$NGINX_PORT" '{ print "http://127.0.0.1:" p "/" substr($1, 1, 2) "/" substr($1, 3) }' \
    "$TMP/ids" >"$TMP/nginx.urls"

# ---------------------------------------------------------------- measuring
# replay KEY HOSTS URLS PID: HOSTS clients (one connection each) fetch every URL once
# each (h2load gives each client n/c requests, walking the list in order); records
# KEY_time (s), KEY_rps, KEY_cpu (server CPU seconds per host).
replay() {
    local key=$1 hosts=$2 urls=$3 pid=$4 c0 c1 log=$LOGS/$1.log secs
    c0=$(cpu_ticks "$pid")
    taskset -c "$LOAD_CPUS" h2load --h1 -t1 -c"$hosts" -n$((hosts * NOBJ)) -T 30 -N 30 -i "$urls" \
        >"$log" 2>&1 || fail_step "h2load failed ($key)" "$log"
    c1=$(cpu_ticks "$pid")
    grep -q "requests: $((hosts * NOBJ)) total, $((hosts * NOBJ)) started, $((hosts * NOBJ)) done, $((hosts * NOBJ)) succeeded, 0 failed" "$log" ||
        fail_step "$key: not every request succeeded" "$log"
    grep -q "status codes: $((hosts * NOBJ)) 2xx" "$log" || fail_step "$key: answers other than 2xx" "$log"
    secs=$(awk '/^finished in/ { v = $3; sub(/,$/, "", v)
        if (v ~ /ms$/) { sub(/ms$/, "", v); v /= 1000 } else if (v ~ /us$/) { sub(/us$/, "", v); v /= 1e6 } else sub(/s$/, "", v)
        print v }' "$log")
    [[ -n $secs ]] || fail_step "$key: no time in h2load's output" "$log"
    record "${key}_time" "$secs"
    record "${key}_rps" "$(awk -v n=$((hosts * NOBJ)) -v s="$secs" 'BEGIN { printf "%.0f", n / s }')"
    record "${key}_cpu" "$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v h="$hosts" 'BEGIN { printf "%.4f", c / hz / h }')"
}
LOADS=()
for ((run = 1; run <= RUNS; run++)); do
    LOADS+=("$(cut -d' ' -f1 /proc/loadavg)")
    say "run $run/$RUNS (load ${LOADS[-1]})"
    for h in "${HOST_LIST[@]}"; do
        # Alternate who goes first, so neither always meets the other's leftovers.
        if ((run % 2)); then
            replay "c_$h" "$h" "$TMP/canopy.urls" "$SERVER_PID"
            replay "n_$h" "$h" "$TMP/nginx.urls" "$NGINX_PID"
        else
            replay "n_$h" "$h" "$TMP/nginx.urls" "$NGINX_PID"
            replay "c_$h" "$h" "$TMP/canopy.urls" "$SERVER_PID"
        fi
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
grep -q . "$LOGS/serve.err" && say "canopy serve wrote to stderr: $(tail -n 3 "$LOGS/serve.err")"

# ---------------------------------------------------------------- report
# saturation c|n: the smallest host count whose median requests/s reaches 90% of the
# highest median of any host count.
saturation() {
    local h
    for h in "${HOST_LIST[@]}"; do echo "$h $(m "${1}_${h}_rps")"; done |
        awk '{ h[NR] = $1; r[NR] = $2; if ($2 > max) max = $2 }
             END { for (i = 1; i <= NR; i++) if (r[i] >= 0.9 * max) { print h[i]; exit } }'
}
report() {
    local rev h sat_c sat_n
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || rev="$rev+dirty"
    echo "many hosts reading a root cold: canopy serve vs nginx — $(date -u +%Y-%m-%dT%H:%M:%SZ), canopy $rev"
    echo "host: $(uname -srm), $(nproc) cpus; servers on cpu $SERVER_CPUS; $(h2load --version | head -n 1) --h1 -t1, one connection per host, on cpu $LOAD_CPUS"
    echo "root: $NPKG packages (closure of: ${PACKAGES[*]}$( ((CLOSURE)) || echo ', no closure')), $NOBJ distinct objects, $OBJ_BYTES bytes"
    echo "load average before/after: $LOAD_BEFORE / $LOAD_AFTER; at each run's start: ${LOADS[*]}"
    echo "figures: median of $RUNS runs; ratio = canopy / nginx (time and CPU: below 1 is better)"
    echo
    printf '%6s | %9s %9s %6s | %11s %11s %6s | %9s %9s\n' hosts "canopy s" "nginx s" ratio \
        "canopy cpu" "nginx cpu" ratio "canopy/s" "nginx/s"
    printf '%s\n' "------------------------------------------------------------------------------------------"
    for h in "${HOST_LIST[@]}"; do
        printf '%6s | %9.2f %9.2f %6s | %11.4f %11.4f %6s | %9.0f %9.0f\n' "$h" \
            "$(m "c_${h}_time")" "$(m "n_${h}_time")" "$(ratio "$(m "c_${h}_time")" "$(m "n_${h}_time")")" \
            "$(m "c_${h}_cpu")" "$(m "n_${h}_cpu")" "$(ratio "$(m "c_${h}_cpu")" "$(m "n_${h}_cpu")")" \
            "$(m "c_${h}_rps")" "$(m "n_${h}_rps")"
    done
    sat_c=$(saturation c)
    sat_n=$(saturation n)
    echo
    echo "s: wall time until every host has every object; cpu: server CPU seconds (user+system,"
    echo "all threads and workers, /proc/PID/stat) per host; /s: requests answered per second."
    echo "saturation (the fewest hosts reaching 90% of the highest requests/s): canopy at $sat_c hosts,"
    echo "nginx at $sat_n. The servers share one cpu, h2load the other."
    local k
    printf 'every run:'
    for k in $(printf '%s\n' "${!VALS[@]}" | sort); do
        printf ' %s=[%s]' "$k" "$(echo ${VALS[$k]} | tr ' ' ,)"
    done
    echo
    local args=()
    ((BUILD)) || args+=(--canopy "$CANOPY")
    ((RUNS != 3)) && args+=(--runs "$RUNS")
    [[ $HOSTS != 1,10,50,100 ]] && args+=(--hosts "$HOSTS")
    [[ $SERVER_CPUS != 0 ]] && args+=(--server-cpus "$SERVER_CPUS")
    [[ $LOAD_CPUS != 1 ]] && args+=(--load-cpus "$LOAD_CPUS")
    ((CLOSURE)) || args+=(--no-closure)
    [[ $DEBS != "$ROOT/target/bench-debs" ]] && args+=(--debs "$DEBS")
    [[ ${PACKAGES[*]} != "${DEFAULT_PACKAGES[*]}" ]] && args+=("${PACKAGES[@]}")
    echo "reproduce: benches/hosts.sh ${args[*]}"
}
mkdir -p "$(dirname "$OUT")"
report | tee "$OUT"
say "report written to $OUT"
