#!/usr/bin/env bash
# benches/bigdir.sh — one directory of many files through a fresh canopy mount: does the
# cost per file stay flat as the directory grows (no work per open or per listing piece
# that grows with the directory)?
#
# For each size N in SIZES (default "10000 40000"), a root holding one directory of N
# small files is imported (`canopy import dir`) and served; then, ROUNDS times (default
# 3) and for each binary (CANOPY, and OLD if set, interleaved), a fresh mount with an
# empty cache:
#   list  `ls -f DIR` (readdir in pieces) on the fresh mount
#   walk  `find DIR -type f | xargs cat` on another fresh mount, and the mount
#         process's CPU time during it
# beside the same two on a checkout of the root on the local disk (warm page cache).
# The mounts' cache is on a tmpfs (/dev/shm): on a disk, file creation itself slows down
# as a file system fills and empties (ext4 without a journal skips recently freed inodes),
# which would hide what canopy's own cost does.
# Prints medians, microseconds per file, and the ratio of the per-file cost at the
# largest size to that at the smallest (1.00: linear; a cost quadratic in the directory's
# size grows it with the size ratio). Figures are reported, never asserted.
#
#   CANOPY=target/release/canopy OLD=/tmp/canopy-before SIZES="10000 40000" benches/bigdir.sh
#
# Needs root (FUSE). Scratch under /tmp and /dev/shm (about 100 MB each for 40,000
# files), removed at exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CANOPY=$(realpath "${CANOPY:-$ROOT/target/release/canopy}")
OLD=${OLD:+$(realpath "$OLD")}
SIZES=${SIZES:-10000 40000}
ROUNDS=${ROUNDS:-3}
[[ -x $CANOPY ]] || { echo "build canopy first: cargo build --release (or set CANOPY)" >&2; exit 1; }
W=$(mktemp -d /tmp/canopy-bigdir-bench-XXXXXX)
SHM=$(mktemp -d /dev/shm/canopy-bigdir-bench-XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    grep -q " $W/mnt " /proc/self/mountinfo && umount -l "$W/mnt"
    rm -rf "$W" "$SHM"
}
trap cleanup EXIT
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
CLK_TCK=$(getconf CLK_TCK)
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
declare -A VALS=()
record() { VALS[$1]="${VALS[$1]:-} $2"; }
median() { printf '%s\n' $1 | sort -g | awk '{ a[NR] = $1 } END { printf "%.4f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
timed() { # timed KEY COMMAND...: wall time of COMMAND into VALS[KEY]
    local key=$1 t0; shift
    t0=$EPOCHREALTIME
    "$@" > /dev/null
    record "$key" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')"
}
walk() { (cd "$1" && find . -type f -print0 | xargs -0 cat); }
mount_fresh() { # mount_fresh BIN: a fresh mount of root big at $W/mnt with an empty cache
    rm -rf "$SHM/cache" "$W/mount.out"
    "$1" mount "$URL" "$W/mnt" --trust "$W/pub" --root big --cache-dir "$SHM/cache" > "$W/mount.out" 2>&1 &
    MP=$!
    PIDS+=("$MP")
    until grep -qs "^mounted at" "$W/mount.out"; do
        kill -0 "$MP" 2>/dev/null || { cat "$W/mount.out" >&2; exit 1; }
        sleep 0.02
    done
}
unmount() { umount "$W/mnt"; wait "$MP" || true; }

BINS=(new)
declare -A BIN=([new]=$CANOPY)
[[ -n $OLD ]] && { BINS+=(old); BIN[old]=$OLD; }
mkdir -p "$W/mnt"
for n in $SIZES; do
    export CANOPY_STORE=$W/store-$n
    rm -rf "$W/src" && mkdir -p "$W/src/big"
    python3 - "$W/src/big" "$n" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, "f%07d" % i), "w") as f:
        f.write("file %d\n" % i)
PY
    "$CANOPY" -q init > /dev/null
    "$CANOPY" -q import dir "$W/src" --name big > /dev/null
    "$CANOPY" -q assemble big big --no-configure > /dev/null
    "$CANOPY" -q key show > "$W/pub"
    "$CANOPY" -q checkout big "$W/co-$n" > /dev/null
    "$CANOPY" serve --listen 127.0.0.1:0 > "$W/serve.out" 2>&1 &
    SP=$!
    PIDS+=("$SP")
    until grep -qs "http://127.0.0.1:" "$W/serve.out"; do sleep 0.02; done
    URL=$(grep -o "http://127.0.0.1:[0-9]*" "$W/serve.out" | head -1)
    for r in $(seq "$ROUNDS"); do
        for b in "${BINS[@]}"; do
            mount_fresh "${BIN[$b]}"
            timed "$b-list-$n" ls -f "$W/mnt/big"
            unmount
            mount_fresh "${BIN[$b]}"
            c0=$(ticks "$MP")
            timed "$b-walk-$n" walk "$W/mnt/big"
            record "$b-cpu-$n" "$(awk -v a="$c0" -v b="$(ticks "$MP")" -v t="$CLK_TCK" 'BEGIN { print (b - a) / t }')"
            unmount
        done
        timed "ext4-list-$n" ls -f "$W/co-$n/big"
        timed "ext4-walk-$n" walk "$W/co-$n/big"
    done
    kill "$SP"; wait "$SP" || true
done

first=${SIZES%% *}; last=${SIZES##* }
per() { awk -v t="$(median "${VALS[$1]}")" -v n="$2" 'BEGIN { printf "%.1f", t / n * 1e6 }'; }
printf '\n%-28s' "per file (µs), median of $ROUNDS"
for n in $SIZES; do printf '%12s' "N=$n"; done
printf '%20s\n' "N=$last / N=$first"
for b in "${BINS[@]}" ext4; do
    for what in list walk cpu; do
        [[ $b == ext4 && $what == cpu ]] && continue
        printf '%-28s' "$b $what$([[ $what == cpu ]] && echo ' (mount process)')"
        for n in $SIZES; do printf '%12s' "$(per "$b-$what-$n" "$n")"; done
        printf '%20s\n' "$(awk -v a="$(per "$b-$what-$last" "$last")" -v b="$(per "$b-$what-$first" "$first")" 'BEGIN { printf "%.2f", a / b }')"
    done
done
echo "(new: $CANOPY${OLD:+; old: $OLD}; ext4: a checkout, warm page cache)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
