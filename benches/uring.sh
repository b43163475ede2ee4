#!/usr/bin/env bash
# benches/uring.sh — does FUSE over io_uring lower the per-open round trip?
#
# One small file opened, read and closed N times in one process (the warm open loop of
# benches/mount.sh), on ext4 and through client/examples/fuse_uring_floor.rs serving
# the same bytes from memory over /dev/fuse read/write (`dev`, as fuser and canopy do)
# and over io_uring (`uring`). Variants alternate within each round; medians are
# reported. Figures are reported, never asserted. See benches/README.md.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
usage: benches/uring.sh [--rounds N] [--opens N] [--floor PATH] [--no-build]

  --rounds N    rounds, each timing every variant once (default: 7)
  --opens N     opens per sample (default: 20000)
  --floor PATH  the fuse_uring_floor binary (default: target/release/examples/fuse_uring_floor,
                built unless --no-build)
  --no-build    do not build it

Needs root (mounts, and /sys/module/fuse/parameters/enable_uring, set to Y for the
run and put back afterwards; it only matters to connections that ask for io_uring at
their start). Kernel 6.14+ with CONFIG_FUSE_IO_URING.
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=7
OPENS=20000
FLOOR=$ROOT/target/release/examples/fuse_uring_floor
BUILD=1
while (($#)); do
    case $1 in
        --rounds) ROUNDS=${2:?--rounds needs a number}; shift 2 ;;
        --opens) OPENS=${2:?--opens needs a number}; shift 2 ;;
        --floor) FLOOR=${2:?--floor needs a path}; BUILD=0; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
die() { echo "uring.sh: $*" >&2; exit 1; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $OPENS =~ ^[1-9][0-9]*$ ]] || die "--rounds and --opens take positive integers"
[[ $(id -u) -eq 0 ]] || die "needs root"
PARAM=/sys/module/fuse/parameters/enable_uring
[[ -e $PARAM ]] || die "$PARAM is missing: this kernel has no FUSE over io_uring (CONFIG_FUSE_IO_URING)"
if ((BUILD)); then
    (cd "$ROOT" && cargo build --release -p canopy-client --example fuse_uring_floor) ||
        die "cargo build --release --example fuse_uring_floor failed"
fi
[[ -x $FLOOR ]] || die "no fuse_uring_floor at $FLOOR"

TMP=$(mktemp -d "$ROOT/target/bench-uring.XXXXXX")
WAS=$(cat "$PARAM")
declare -A PID=()
cleanup() {
    local m
    for m in "${!PID[@]}"; do
        kill -TERM "${PID[$m]}" 2>/dev/null || true
        wait "${PID[$m]}" 2>/dev/null || true
        mountpoint -q "$m" && umount -l "$m"
    done
    [[ $WAS == Y ]] || echo N >"$PARAM"
    rm -rf -- "$TMP"
}
trap cleanup EXIT

head -c 3000 /dev/urandom >"$TMP/f"
# mount_floor MODE: serves $TMP/f at $TMP/MODE/f, waits for "mounted at".
mount_floor() {
    local mode=$1 i
    mkdir -p "$TMP/$mode"
    "$FLOOR" "$mode" "$TMP/f" "$TMP/$mode" >"$TMP/$mode.out" 2>"$TMP/$mode.err" &
    PID[$TMP/$mode]=$!
    for ((i = 0; i < 200; i++)); do
        grep -q '^mounted at' "$TMP/$mode.out" 2>/dev/null && break
        kill -0 "${PID[$TMP/$mode]}" 2>/dev/null || die "fuse_uring_floor $mode exited: $(cat "$TMP/$mode.err")"
        sleep 0.05
    done
    cmp -s "$TMP/f" "$TMP/$mode/f" || die "fuse_uring_floor $mode serves other bytes: $(cat "$TMP/$mode.err")"
}
echo Y >"$PARAM"
mount_floor dev
mount_floor uring
[[ -s $TMP/uring.err ]] && die "the io_uring variant complained: $(cat "$TMP/uring.err")"

LOOP='import os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
t = time.perf_counter()
for _ in range(n):
    fd = os.open(path, os.O_RDONLY)
    os.read(fd, 4096)
    os.close(fd)
print("%.6f" % (time.perf_counter() - t))'
declare -A T=()
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= ROUNDS; r++)); do
    for v in ext4 dev uring; do
        case $v in ext4) p=$TMP/f ;; *) p=$TMP/$v/f ;; esac
        python3 -c "$LOOP" "$p" 2000 >/dev/null   # warm
        T[$v]+="$(python3 -c "$LOOP" "$p" "$OPENS") "
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
echo "FUSE transport: open+read+close one 3,000-byte file $OPENS times, $ROUNDS rounds (medians, s)"
echo "kernel $(uname -r); load before/after: $LOAD_BEFORE / $LOAD_AFTER"
E=$(median <<<"${T[ext4]}")
for v in ext4 dev uring; do
    m=$(median <<<"${T[$v]}")
    printf '%-8s %9.4f s  %6.2f us/open  %5.2fx ext4   samples: %s\n' "$v" "$m" \
        "$(awk -v m="$m" -v n="$OPENS" 'BEGIN { print m / n * 1e6 }')" \
        "$(awk -v m="$m" -v e="$E" 'BEGIN { print m / e }')" "${T[$v]}"
done
