#!/usr/bin/env bash
# benches/mount.sh — canopy serve + canopy mount against plain references, same run.
#
# On one store built from real .debs (the closure import.sh uses), measures:
#   1. warm reads: the largest files (read again 20 times), `find | xargs stat` and
#      `find | xargs cat` of the whole root, one small file opened, read and closed
#      20,000 times, the largest 5,000 times, the largest files read through one open
#      each, and 20 warm starts of bash and python3 in a chroot of the root,
#      through the mount (passthrough on / off) vs a `canopy checkout` on
#      disk and vs the floor of any FUSE mount (client/examples/fuse_floor.rs: the same
#      tree served from memory with canopy's session settings; and the same with OPEN
#      answered ENOSYS, so opens cost no round trip), variants interleaved
#   2. cold: `canopy mount` start to "mounted at" + `find | wc -l`, and
#      `chroot ROOT /bin/bash -c true`, with an empty cache and dropped page cache,
#      vs the same on the checkout after dropping the page cache
#   3. page cache sharing: growth of `Cached:` while reading every file of N roots that
#      share all but one tiny package, through one mount vs N checkouts vs one root
#   4. object GET throughput with wrk: canopy serve vs nginx serving the same file
#      (32 connections and 1 connection; zstd on the wire for canopy only)
# Prints a table (and writes it to target/bench-mount.txt). Figures are reported,
# never asserted. See benches/README.md.
set -euo pipefail
export LC_ALL=C

DEFAULT_PACKAGES=(bash coreutils python3.11-minimal perl-base grep sed findutils tar gzip)

usage() {
    cat <<'EOF'
usage: benches/mount.sh [options] [PACKAGE...]

Benchmarks `canopy serve` and `canopy mount` (FUSE) against a checkout on the local
filesystem and against nginx, on the dependency closure (Depends + Pre-Depends, no
Recommends) of PACKAGE... (default: bash coreutils python3.11-minimal perl-base grep
sed findutils tar gzip — the set benches/import.sh uses).

options:
  --debs DIR          .deb cache, reused when present (default: target/bench-debs)
  --runs N            repetitions of every measurement; the median is reported (default: 3)
  --out FILE          also write the report here (default: target/bench-mount.txt)
  --no-closure        use exactly PACKAGE..., without their dependencies
  --no-build          do not run `cargo build --release`; use target/release/canopy as is
  --canopy PATH       use this canopy binary (implies --no-build)
  --floor PATH        use this fuse_floor binary (default: target/release/examples/fuse_floor,
                      built unless --no-build)
  --compare PATH      warm part: also mount with this second canopy binary (passthrough),
                      interleaved with the first, for an A/B of two builds
  --roots N           roots for the page cache measurement (default: 10)
  --largest N         how many of the largest files the warm read uses (default: 20)
  --wrk-duration D    duration of each wrk run (default: 10s)
  --wrk-threads N     wrk threads (default: 2)
  --wrk-connections N wrk connections (default: 32)
  --object-size SIZE  wrk fetches the regular file closest to this size, within
                      100 KiB..1 MiB (default: 256K)
  --only LIST         run only these measurements, comma-separated: warm,cold,share,http
                      (default: all)
  --wait-timeout S    how long to wait for the server / a mount to come up (default: 60)
  --step-timeout S    bound on each measured command (default: 600)
  --keep              keep the scratch directory (target/bench-tmp/...) afterwards
  -h, --help          this text

Needs root: FUSE mounts, /proc/sys/vm/drop_caches, chroot, and apt-get to install wrk,
nginx, curl and dpkg-dev when missing. Only 127.0.0.1 is used.
EOF
}


# ---------------------------------------------------------------- arguments
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
DEBS=$ROOT/target/bench-debs
RUNS=3
OUT=$ROOT/target/bench-mount.txt
CLOSURE=1
BUILD=1
CANOPY=$ROOT/target/release/canopy
FLOOR=$ROOT/target/release/examples/fuse_floor
COMPARE=
NROOTS=10
LARGEST=20
WRK_DURATION=10s
WRK_THREADS=2
WRK_CONNS=32
OBJECT_SIZE=256K
ONLY=warm,cold,share,http
WAIT_TIMEOUT=60
STEP_TIMEOUT=600
KEEP=0
PACKAGES=()

while (($#)); do
    case $1 in
        --debs) DEBS=${2:?--debs needs a directory}; shift 2 ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        --no-closure) CLOSURE=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --canopy) CANOPY=${2:?--canopy needs a path}; BUILD=0; shift 2 ;;
        --floor) FLOOR=${2:?--floor needs a path}; shift 2 ;;
        --compare) COMPARE=${2:?--compare needs a path}; shift 2 ;;
        --roots) NROOTS=${2:?--roots needs a number}; shift 2 ;;
        --largest) LARGEST=${2:?--largest needs a number}; shift 2 ;;
        --wrk-duration) WRK_DURATION=${2:?--wrk-duration needs a duration}; shift 2 ;;
        --wrk-threads) WRK_THREADS=${2:?--wrk-threads needs a number}; shift 2 ;;
        --wrk-connections) WRK_CONNS=${2:?--wrk-connections needs a number}; shift 2 ;;
        --object-size) OBJECT_SIZE=${2:?--object-size needs a size}; shift 2 ;;
        --only) ONLY=${2:?--only needs a list}; shift 2 ;;
        --wait-timeout) WAIT_TIMEOUT=${2:?--wait-timeout needs seconds}; shift 2 ;;
        --step-timeout) STEP_TIMEOUT=${2:?--step-timeout needs seconds}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; PACKAGES+=("$@"); break ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) PACKAGES+=("$1"); shift ;;
    esac
done
((${#PACKAGES[@]})) || PACKAGES=("${DEFAULT_PACKAGES[@]}")
for v in RUNS NROOTS LARGEST WRK_THREADS WRK_CONNS WAIT_TIMEOUT STEP_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v,,} must be a positive integer, got '${!v}'"
done
[[ $WRK_DURATION =~ ^[1-9][0-9]*[smh]?$ ]] || die "--wrk-duration must look like 10s, got '$WRK_DURATION'"
OBJECT_BYTES=$(numfmt --from=iec "$OBJECT_SIZE" 2>/dev/null) || die "--object-size: cannot parse '$OBJECT_SIZE'"
declare -A DO=()
IFS=, read -r -a _only <<<"$ONLY"
for m in "${_only[@]}"; do
    case $m in warm|cold|share|http) DO[$m]=1 ;; *) die "--only: unknown measurement '$m' (warm,cold,share,http)" ;; esac
done
want() { [[ -n ${DO[$1]:-} ]]; }
[[ $DEBS = /* ]] || DEBS=$PWD/$DEBS
[[ $OUT = /* ]] || OUT=$PWD/$OUT
[[ $CANOPY = /* ]] || CANOPY=$PWD/$CANOPY
[[ $FLOOR = /* ]] || FLOOR=$PWD/$FLOOR
[[ -z $COMPARE || $COMPARE = /* ]] || COMPARE=$PWD/$COMPARE

[[ $(id -u) -eq 0 ]] || die "needs root (FUSE mounts, drop_caches, chroot)"
[[ -w /proc/sys/vm/drop_caches ]] || die "/proc/sys/vm/drop_caches is not writable (restricted container?)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing: modprobe fuse"

# ---------------------------------------------------------------- tools, canopy, .debs
ensure_packages wrk:wrk nginx:nginx curl:curl zstd:zstd dpkg-deb:dpkg-dev
require_tools wrk nginx curl zstd dpkg-deb apt-get apt-cache tar find xargs stat chroot timeout \
    mountpoint umount ss sha256sum awk sort date numfmt fincore
build_canopy
if want warm; then
    if ((BUILD)); then
        (cd "$ROOT" && cargo build --release -p canopy-client --example fuse_floor) ||
            die "cargo build --release --example fuse_floor failed (or pass --floor PATH)"
    fi
    [[ -x $FLOOR ]] || die "fuse_floor binary not found at $FLOOR (build it: cargo build --release -p canopy-client --example fuse_floor)"
    [[ -z $COMPARE || -x $COMPARE ]] || die "--compare: no executable at $COMPARE"
fi
CANOPY_VERSION=$("$CANOPY" --version 2>/dev/null || echo "canopy ?")
# Same package set and cache as benches/import.sh.
fetch_debs

# ---------------------------------------------------------------- scratch space, processes
SERVER_PID=
URL=
NGINX_PID=
declare -A MOUNT_PID=()    # mountpoint -> pid of its `canopy mount`
ODD=()                     # things canopy did that look wrong, for the report
scratch mount              # common.sh: TMP, and `release` (below) at exit
S=$TMP/store
LOGS=$TMP/logs
mkdir -p "$LOGS"

odd() { ODD+=("$*"); printf 'note: %s\n' "$*" >&2; }

is_mounted() { mountpoint -q -- "$1" 2>/dev/null; }

# Mountpoints under the scratch directory, deepest first.
mounts_under_tmp() {
    awk -v t="$TMP/" '{ p = $5; gsub(/\\040/, " ", p); if (index(p, t) == 1) print p }' /proc/self/mountinfo |
        sort -r
}

# stop_mount MNT: SIGTERM the daemon (it unmounts), wait; then KILL and umount -l.
stop_mount() {
    local mnt=$1 pid=${MOUNT_PID[$1]:-} i rc=0
    if [[ -n $pid ]]; then
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 200; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.05
            done
            if kill -0 "$pid" 2>/dev/null; then
                odd "canopy mount at ${mnt#"$TMP"/} did not exit within 10 s of SIGTERM; killed"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        wait "$pid" 2>/dev/null || rc=$?
        if ((rc != 0 && rc != 143)); then
            odd "canopy mount at ${mnt#"$TMP"/} exited with status $rc after SIGTERM (stderr: $(tail -n 3 "$LOGS/mount-$(basename "$mnt").err" 2>/dev/null | tr '\n' ' '))"
        fi
        unset "MOUNT_PID[$mnt]"
    fi
    if is_mounted "$mnt"; then
        [[ -z $pid ]] || odd "${mnt#"$TMP"/} was still mounted after canopy mount exited"
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
}

stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

stop_nginx() {
    [[ -n $NGINX_PID ]] || return 0
    kill -QUIT "$NGINX_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
    NGINX_PID=
}

# At exit: mounts, server and nginx stopped; fails while something stays mounted.
release() {
    local m
    for m in "${!MOUNT_PID[@]}"; do stop_mount "$m"; done
    stop_server
    stop_nginx
    while read -r m; do
        [[ -n $m ]] || continue
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(mounts_under_tmp)
    [[ -z $(mounts_under_tmp) ]]
}

# ---------------------------------------------------------------- helpers
# (record, median, ratio, timed, wait_line... are in common.sh.)
FAILED_LOG=$ROOT/target/bench-mount-failed.log
export TIMEFILE=$LOGS/time

cached_kib() { awk '/^Cached:/ { print $2 }' /proc/meminfo; }

start_server() {
    "$CANOPY" --store "$S" serve --listen 127.0.0.1:0 >"$LOGS/serve.out" 2>"$LOGS/serve.err" &
    SERVER_PID=$!
    wait_line "$LOGS/serve.out" '^serving .* on (http://127\.0\.0\.1:[0-9]+)$' "$SERVER_PID" "canopy serve"
    URL=${BASH_REMATCH[1]}
}

# start_mount MNT CACHE [ARGS...]: `canopy mount URL MNT`, waits for "mounted at";
# leaves the seconds from start to ready in $T.
start_mount() {
    local mnt=$1 cache=$2 name t0 t1
    shift 2
    name=$(basename "$mnt")
    mkdir -p "$mnt"
    is_mounted "$mnt" && die "$mnt is already mounted"
    # Truncate before starting: the background child's own redirection happens later,
    # and wait_line must not see the previous mount's "mounted at" line.
    : >"$LOGS/mount-$name.out"
    t0=$(now)
    "$CANOPY" mount "$URL" "$mnt" --trust "$TMP/server.pub" --cache-dir "$cache" "$@" \
        >"$LOGS/mount-$name.out" 2>"$LOGS/mount-$name.err" &
    MOUNT_PID[$mnt]=$!
    wait_line "$LOGS/mount-$name.out" '^mounted at ' "${MOUNT_PID[$mnt]}" "canopy mount ($name)"
    t1=$(now)
    T=$(elapsed "$t0" "$t1")
    is_mounted "$mnt" || fail_step "canopy mount said \"$LINE\" but $mnt is not a mountpoint" "$LOGS/mount-$name.err"
}

# start_floor MNT [--no-open]: the floor file system serving the checkout at MNT (see
# fuse_floor.rs).
start_floor() {
    local mnt=$1 name
    shift
    name=$(basename "$mnt")
    mkdir -p "$mnt"
    : >"$LOGS/mount-$name.out"
    "$FLOOR" "$@" "$CO" "$mnt" >"$LOGS/mount-$name.out" 2>"$LOGS/mount-$name.err" &
    MOUNT_PID[$mnt]=$!
    wait_line "$LOGS/mount-$name.out" '^mounted at ' "${MOUNT_PID[$mnt]}" "fuse_floor ($name)"
}

# distinct_kib DIR NAME...: KiB of pages (4 KiB each, rounded up) of the distinct files
# (by inode number) under DIR/NAME...
distinct_kib() {
    local dir=$1
    shift
    (cd "$dir" && find "$@" -type f -printf '%i %s\n') |
        sort -u -k1,1 | awk '{ s += int(($2 + 4095) / 4096) * 4 } END { print s + 0 }'
}

# held_kib DIR NAME...: KiB of page cache that fincore finds for the distinct files (one
# path per inode number) under DIR/NAME...
held_kib() {
    local dir=$1
    shift
    (cd "$dir" && find "$@" -type f -printf '%i %p\n' | sort -u -k1,1 | cut -d' ' -f2- |
        tr '\n' '\0' | xargs -0 -r fincore -b -n -o RES) |
        awk '{ s += $1 } END { print int(s / 1024) }'
}

# read_all DIR...: cat every regular file under DIR... (what "read every file" means).
READ_ALL='find "$@" -type f -print0 | xargs -0 -r cat >/dev/null'

# ---------------------------------------------------------------- the store
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "store: import $NPKG .debs, assemble base$(want share && echo " and r1..r$NROOTS")"
"$CANOPY" --store "$S" init >"$LOGS/init.log" 2>&1 || fail_step "canopy init failed" "$LOGS/init.log"
"$CANOPY" --store "$S" key show >"$TMP/server.pub"
"$CANOPY" --store "$S" import deb "${DEBFILES[@]}" >"$LOGS/import.log" 2>&1 ||
    fail_step "canopy import deb failed" "$LOGS/import.log"
"$CANOPY" --store "$S" assemble base "${PKGNAMES[@]}" "${ASSEMBLE_FLAGS[@]}" >"$LOGS/assemble.log" 2>&1 ||
    fail_step "canopy assemble base failed" "$LOGS/assemble.log"
if want share; then
    # rK = the same packages + extraK, a tarball holding one small distinct file.
    for ((k = 1; k <= NROOTS; k++)); do
        x=$TMP/extra$k
        mkdir -p "$x/opt/extra"
        printf 'extra file %d of the page cache benchmark\n' "$k" >"$x/opt/extra/extra$k.txt"
        tar -C "$x" --owner=0 --group=0 --numeric-owner -cf "$x.tar" opt
        "$CANOPY" --store "$S" import tar "$x.tar" --name "extra$k" >>"$LOGS/import-extra.log" 2>&1 ||
            fail_step "canopy import tar extra$k failed" "$LOGS/import-extra.log"
        "$CANOPY" --store "$S" assemble "r$k" "${PKGNAMES[@]}" "extra$k" "${ASSEMBLE_FLAGS[@]}" \
            >>"$LOGS/assemble-r.log" 2>&1 || fail_step "canopy assemble r$k failed" "$LOGS/assemble-r.log"
        rm -rf -- "$x" "$x.tar"
    done
fi
CO=$TMP/co-base
"$CANOPY" --store "$S" checkout base "$CO" >"$LOGS/checkout.log" 2>&1 ||
    fail_step "canopy checkout base failed" "$LOGS/checkout.log"
TREE_BYTES=$(du -sb "$CO" | cut -f1)
TREE_FILES=$(find "$CO" -type f | wc -l)
TREE_ENTRIES=$(find "$CO" | wc -l)
CO_FS=$(findmnt -n -o FSTYPE -T "$CO" 2>/dev/null || stat -f -c %T "$CO")

say "canopy serve --listen 127.0.0.1:0"
start_server
say "serving on $URL"

# ---------------------------------------------------------------- 1. warm reads
# The largest files of the root (paths relative to it).
mapfile -t BIG < <(cd "$CO" && find . -type f -printf '%s\t%P\n' | sort -n | tail -n "$LARGEST" | cut -f2)
BIG_BYTES=0
for f in "${BIG[@]}"; do BIG_BYTES=$((BIG_BYTES + $(stat -c %s "$CO/$f"))); done
CAT_BIG='cd "$1" && shift && cat -- "$@" >/dev/null'
# Warm re-reads of the largest files take milliseconds: read them REREADS times per
# sample so that a sample is long enough to judge.
REREADS=20
REREAD_BIG='cd "$1" && shift && for ((i = 0; i < '"$REREADS"'; i++)); do cat -- "$@"; done >/dev/null'
# What an open costs once everything is cached: a file opened, read and closed N times
# in one process (no exec, no lookup: the per-open round trips alone), for one small
# file (OPENS times) and for the largest (BIG_OPENS times: read by the kernel from the
# cache file with passthrough, so what an open costs on top of the round trip there).
OPENS=20000
BIG_OPENS=5000
SMALL_FILE=$(cd "$CO" && find . -type f -size -4k -size +0 -printf '%P\n' | sort | sed -n 1p)
OPEN_LOOP='/usr/bin/python3 -c "
import os, sys
path, n = sys.argv[1], int(sys.argv[2])
for _ in range(n):
    fd = os.open(path, os.O_RDONLY)
    os.read(fd, 4096)
    os.close(fd)
" "$1/$2" "$3"'
# The largest files read REREADS times each through one open per file (pread from the
# start each time): the reads of the re-read row without its opens.
PREAD_BIG='cd "$1" && shift && /usr/bin/python3 -c "
import os, sys
fds = [os.open(p, os.O_RDONLY) for p in sys.argv[2:]]
for _ in range(int(sys.argv[1])):
    for fd in fds:
        off = 0
        while True:
            b = os.pread(fd, 131072, off)
            if not b:
                break
            off += len(b)
" '"$REREADS"' "$@"'

# What a program start costs once everything is cached: its opens, its searches for
# files that are not there (a loader's library path, an interpreter's module path) and
# the symlinks it goes through, 20 starts of each of two programs.
EXEC_LOOP='for ((i = 0; i < 20; i++)); do chroot "$1" /bin/bash -c true && chroot "$1" /usr/bin/python3.11 -c pass || exit; done'

if want warm; then
    M_PT=$TMP/mnt-pt
    M_NP=$TMP/mnt-nopt
    say "warm: mounting base twice (passthrough on / --no-passthrough)"
    # Followed, as hosts mount roots: names and attributes are cached as long as on a
    # pinned root (a switch has the kernel forget what it changed).
    start_mount "$M_PT" "$TMP/cache-pt" --root base --follow --interval 10s
    start_mount "$M_NP" "$TMP/cache-nopt" --root base --no-passthrough --follow --interval 10s
    declare -A WDIR=([ext4]=$CO [pt]=$M_PT [nopt]=$M_NP [floor]=$TMP/mnt-floor [noopen]=$TMP/mnt-noopen)
    WARM_VARIANTS=(ext4 pt nopt floor noopen)
    start_floor "${WDIR[floor]}"
    # The floor without OPEN/RELEASE round trips: what stands between FUSE and the disk.
    start_floor "${WDIR[noopen]}" --no-open
    if [[ -n $COMPARE ]]; then
        # The second binary, same options as the first's passthrough mount.
        WDIR[cmp]=$TMP/mnt-cmp
        WARM_VARIANTS+=(cmp)
        CANOPY=$COMPARE start_mount "${WDIR[cmp]}" "$TMP/cache-cmp" --root base --follow --interval 10s
    fi
    if grep -q 'passthrough refused' "$LOGS/mount-mnt-pt.err"; then
        odd "passthrough was refused on this kernel: $(grep -m1 'passthrough refused' "$LOGS/mount-mnt-pt.err")"
    fi
    # Same view as the checkout?
    for v in "${WARM_VARIANTS[@]:1}"; do
        mnt=${WDIR[$v]}
        n=$(find "$mnt" | wc -l)
        ((n == TREE_ENTRIES)) || odd "find $(basename "$mnt") | wc -l = $n, the checkout has $TREE_ENTRIES entries"
        for f in "${BIG[@]}"; do
            cmp -s "$CO/$f" "$mnt/$f" || odd "$(basename "$mnt")/$f differs from the checkout"
        done
    done
    for ((run = 1; run <= RUNS; run++)); do
        say "warm: run $run/$RUNS"
        for v in "${WARM_VARIANTS[@]}"; do
            d=${WDIR[$v]}
            # the first pass warms (the mounts fetched everything when compared above),
            # the second is timed
            timed w_warmup "$CAT_BIG" "$d" "${BIG[@]}"
            timed "w_big_$v" "$REREAD_BIG" "$d" "${BIG[@]}"
            timed w_warmup 'cd "$1" && find . -type f -print0 | xargs -0 stat >/dev/null' "$d"
            timed "w_stat_$v" 'cd "$1" && find . -type f -print0 | xargs -0 stat >/dev/null' "$d"
            timed w_warmup "$READ_ALL" "$d"
            timed "w_all_$v" "$READ_ALL" "$d"
            timed w_warmup "$OPEN_LOOP" "$d" "$SMALL_FILE" "$OPENS"
            timed "w_open_$v" "$OPEN_LOOP" "$d" "$SMALL_FILE" "$OPENS"
            timed w_warmup "$OPEN_LOOP" "$d" "${BIG[-1]}" "$BIG_OPENS"
            timed "w_openbig_$v" "$OPEN_LOOP" "$d" "${BIG[-1]}" "$BIG_OPENS"
            timed "w_pread_$v" "$PREAD_BIG" "$d" "${BIG[@]}"
            timed w_warmup "$EXEC_LOOP" "$d"
            timed "w_exec_$v" "$EXEC_LOOP" "$d"
        done
    done
    for v in "${WARM_VARIANTS[@]:1}"; do stop_mount "${WDIR[$v]}"; done
fi

# ---------------------------------------------------------------- 2. cold
if want cold; then
    for ((run = 1; run <= RUNS; run++)); do
        say "cold: run $run/$RUNS"
        # mount start -> "mounted at", then find | wc -l; empty cache, no page cache
        M=$TMP/mnt-cold
        drop_caches
        start_mount "$M" "$TMP/cache-cold$run-a" --root base
        record c_ready "$T"
        timed c_find 'find "$1" | wc -l' "$M"
        n=$(tail -n1 "$LOGS/c_find.log")
        ((n == TREE_ENTRIES)) || odd "cold find through the mount counted $n entries, the checkout has $TREE_ENTRIES"
        record c_total "$(awk -v a="${VALS[c_ready]##* }" -v b="$T" 'BEGIN { printf "%.4f", a + b }')"
        # then the largest files, fetched from the server (whose store is cold too)
        drop_caches
        timed c_big "$CAT_BIG" "$M" "${BIG[@]}"
        stop_mount "$M"
        drop_caches
        timed c_find_ref 'find "$1" | wc -l' "$CO"
        drop_caches
        timed c_big_ref "$CAT_BIG" "$CO" "${BIG[@]}"

        # chroot bash -c true from a fresh mount (empty cache), page cache dropped
        for v in pt nopt; do
            args=(--root base)
            [[ $v == nopt ]] && args+=(--no-passthrough)
            start_mount "$M" "$TMP/cache-cold$run-$v" "${args[@]}"
            drop_caches
            timed "c_chroot_$v" 'chroot "$1" /bin/bash -c true' "$M"
            # and once more, warm, for scale
            timed "c_chroot_${v}_warm" 'chroot "$1" /bin/bash -c true' "$M"
            t0=$(now)
            stop_mount "$M"
            record c_stop "$(elapsed "$t0" "$(now)")"
        done
        drop_caches
        timed c_chroot_ref 'chroot "$1" /bin/bash -c true' "$CO"
        timed c_chroot_ref_warm 'chroot "$1" /bin/bash -c true' "$CO"
        rm -rf -- "$TMP"/cache-cold"$run"-*
    done
fi

# ---------------------------------------------------------------- 3. page cache sharing
if want share; then
    say "share: $NROOTS checkouts (copies) of r1..r$NROOTS"
    RDIRS=()
    for ((k = 1; k <= NROOTS; k++)); do
        "$CANOPY" --store "$S" checkout "r$k" "$TMP/co-r$k" >>"$LOGS/checkout-r.log" 2>&1 ||
            fail_step "canopy checkout r$k failed" "$LOGS/checkout-r.log"
        RDIRS+=("r$k")
    done
    R1_BYTES=$(du -sb "$TMP/co-r1" | cut -f1)
    M_SH=$TMP/mnt-all
    M_SHNP=$TMP/mnt-all-nopt
    say "share: mounting every root (passthrough on / --no-passthrough), filling their caches"
    start_mount "$M_SH" "$TMP/cache-all"
    start_mount "$M_SHNP" "$TMP/cache-all-nopt" --no-passthrough
    for ((k = 1; k <= NROOTS; k++)); do
        [[ -d $M_SH/r$k ]] || fail_step "the all-roots mount does not show r$k" "$LOGS/mount-mnt-all.err"
    done
    # Fill the caches (the first read fetches from the server): what is measured below
    # is the host reading roots whose objects are already in its cache.
    timed s_fill_pt "cd \"\$1\" && shift && $READ_ALL" "$M_SH" "${RDIRS[@]}"
    timed s_fill_nopt "cd \"\$1\" && shift && $READ_ALL" "$M_SHNP" "${RDIRS[@]}"
    CACHE_BYTES=$(du -sb "$TMP/cache-all/objects" | cut -f1)
    MOUNT_RSS=$(awk '/^VmRSS:/ { print $2 }' "/proc/${MOUNT_PID[$M_SH]}/status")
    for k in 1 "$NROOTS"; do
        cmp -s "$TMP/co-r$k/opt/extra/extra$k.txt" "$M_SH/r$k/opt/extra/extra$k.txt" ||
            odd "r$k/opt/extra/extra$k.txt differs between the mount and the checkout"
    done
    # share_read KEY DIR NAME...: drop caches, read every file of DIR/NAME..., record
    # the growth of Cached: in KiB (KEY) and the wall time (KEY_t).
    share_read() {
        local key=$1 c0 c1
        shift
        drop_caches
        c0=$(cached_kib)
        timed "${key}_t" "cd \"\$1\" && shift && $READ_ALL" "$@"
        c1=$(cached_kib)
        record "$key" "$((c1 - c0))"
    }
    # What the page cache holds, file by file (fincore: mincore of each file, so other
    # work on the machine does not count, unlike Cached:), right after a read of every
    # root: through the mount, one path per inode (the mount numbers a file by its
    # identity, so that is one path per distinct file identity); and the cache files.
    # With passthrough the kernel reads large files from their cache file, and fincore
    # through the mount sees those pages: the cache files' figure repeats them.
    IDENT_KIB=$(distinct_kib "$M_SH" "${RDIRS[@]}")
    for ((run = 1; run <= RUNS; run++)); do
        say "share: run $run/$RUNS"
        share_read s_one "$TMP" co-r1
        share_read s_co "$TMP" "${RDIRS[@]/#/co-}"
        share_read s_pt "$M_SH" "${RDIRS[@]}"
        record s_pt_held "$(held_kib "$M_SH" "${RDIRS[@]}")"
        record s_pt_files "$(find "$TMP/cache-all/objects" -type f -print0 | xargs -0 -r fincore -b -n -o RES | awk '{ s += $1 } END { print int(s / 1024) }')"
        share_read s_nopt "$M_SHNP" "${RDIRS[@]}"
        record s_nopt_held "$(held_kib "$M_SHNP" "${RDIRS[@]}")"
        record s_nopt_files "$(find "$TMP/cache-all-nopt/objects" -type f -print0 | xargs -0 -r fincore -b -n -o RES | awk '{ s += $1 } END { print int(s / 1024) }')"
    done
    stop_mount "$M_SH"
    stop_mount "$M_SHNP"
    rm -rf -- "$TMP"/co-r*
fi

# ---------------------------------------------------------------- 4. HTTP GET throughput
lat_ms() {   # lat_ms PCT LOG: wrk's latency percentile in ms
    awk -v p="$1%" '$1 == p { v = $2; u = v; sub(/^[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
        if (f > 0) printf "%.3f", v * f; exit }' "$2"
}


# wrk_run KEY THREADS CONNECTIONS URL SERVER_PIDS [HEADER]: records KEY_rps, KEY_mibs,
# latency percentiles and KEY_cpu (server CPU seconds per second); errors are notes.
wrk_run() {
    local key=$1 threads=$2 conns=$3 url=$4 pids=$5 log=$LOGS/$1.log rps tr unit mibs c0 c1 t0 t1
    shift 5
    local hdr=()
    (($#)) && hdr=(-H "$1")
    # shellcheck disable=SC2086 # $pids is a list
    c0=$(cpu_ticks $pids)
    t0=$EPOCHREALTIME
    timeout -k 10 "$STEP_TIMEOUT" wrk -t "$threads" -c "$conns" -d "$WRK_DURATION" \
        --latency "${hdr[@]}" "$url" >"$log" 2>&1 || fail_step "wrk failed ($key)" "$log"
    t1=$EPOCHREALTIME
    # shellcheck disable=SC2086
    c1=$(cpu_ticks $pids)
    record "${key}_cpu" "$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", c / hz / (b - a) }')"
    CPU_S=$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.4f", c / hz }')
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$log")
    read -r tr unit < <(awk '/^Transfer\/sec:/ { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+$/, "", v); print v, u }' "$log")
    mibs=$(awk -v v="$tr" -v u="$unit" 'BEGIN {
        f = (u == "B") ? 1 / 1048576 : (u == "KB") ? 1 / 1024 : (u == "MB") ? 1 : (u == "GB") ? 1024 : (u == "TB") ? 1048576 : -1
        if (f < 0) print "-"; else printf "%.1f", v * f }')
    [[ -n $rps ]] || fail_step "cannot read wrk's output ($key)" "$log"
    record "${key}_rps" "$rps"
    # server CPU milliseconds per request answered
    record "${key}_cpureq" "$(awk -v c="$CPU_S" -v r="$rps" -v d="$(awk '/requests in/ { print $1 }' "$log")" 'BEGIN { if (d > 0) printf "%.3f", c * 1000 / d; else print "-" }')"
    record "${key}_mibs" "$mibs"
    record "${key}_p50" "$(lat_ms 50 "$log")"
    record "${key}_p99" "$(lat_ms 99 "$log")"
    if grep -qE 'Non-2xx|Socket errors' "$log"; then
        odd "wrk $key: $(grep -E 'Non-2xx|Socket errors' "$log" | tr -s ' ' | tr '\n' ' ')"
    fi
}

if want http; then
    # The regular file closest to --object-size, within 100 KiB..1 MiB.
    OBJ_FILE=$(cd "$CO" && find . -type f -size +100k -size -1025k -printf '%s\t%P\n' |
        sort -k2 | awk -F'\t' -v want="$OBJECT_BYTES" '{ d = $1 - want; if (d < 0) d = -d
            if (best == "" || d < bd) { best = $2; bd = d } } END { print best }')
    [[ -n $OBJ_FILE ]] || die "no regular file of 100 KiB..1 MiB in the root"
    OBJ_SIZE=$(stat -c %s "$CO/$OBJ_FILE")
    OBJ_ID=$(sha256sum "$CO/$OBJ_FILE" | cut -d' ' -f1)
    OBJ_PATH=$S/objects/${OBJ_ID:0:2}/${OBJ_ID:2}
    [[ -f $OBJ_PATH ]] || die "object $OBJ_ID ($OBJ_FILE) is not at $OBJ_PATH"
    OBJ_ZSTD=$(zstd -3 -c "$OBJ_PATH" | wc -c)

    NGINX_PORT=$(free_port) || die "no free port found on 127.0.0.1"
    say "nginx on 127.0.0.1:$NGINX_PORT (root $S/objects)"
    # keepalive_requests: nginx's default of 1000 would reconnect during a wrk run.
    start_nginx "$TMP/nginx" "$NGINX_PORT" "$S/objects" "/${OBJ_ID:0:2}/${OBJ_ID:2}" \
        'access_log off; tcp_nopush on; keepalive_requests 1000000;'
    NGINX_URL=http://127.0.0.1:$NGINX_PORT/${OBJ_ID:0:2}/${OBJ_ID:2}
    CANOPY_OBJ_URL=$URL/v1/objects/$OBJ_ID
    # Both serve the object's bytes; canopy compresses with zstd when asked.
    for u in "$CANOPY_OBJ_URL" "$NGINX_URL"; do
        got=$(curl -sf "$u" | sha256sum | cut -d' ' -f1)
        [[ $got == "$OBJ_ID" ]] || die "$u does not serve the object (sha256 $got)"
    done
    curl -sf -D "$LOGS/zstd.headers" -H 'Accept-Encoding: zstd' -o "$TMP/obj.zst" "$CANOPY_OBJ_URL" ||
        die "GET with Accept-Encoding: zstd failed"
    if grep -qi '^content-encoding: *zstd' "$LOGS/zstd.headers"; then
        WIRE_ZSTD=$(stat -c %s "$TMP/obj.zst")
        [[ $(zstd -dc "$TMP/obj.zst" | sha256sum | cut -d' ' -f1) == "$OBJ_ID" ]] ||
            odd "the zstd response does not decompress to the object"
    else
        WIRE_ZSTD=
        odd "canopy serve did not compress with Accept-Encoding: zstd"
    fi
    for ((run = 1; run <= RUNS; run++)); do
        say "http: run $run/$RUNS (6 x wrk -d $WRK_DURATION)"
        NGINX_PIDS="$NGINX_PID $(children "$NGINX_PID" | tr '\n' ' ')"
        wrk_run h_canopy "$WRK_THREADS" "$WRK_CONNS" "$CANOPY_OBJ_URL" "$SERVER_PID"
        wrk_run h_nginx "$WRK_THREADS" "$WRK_CONNS" "$NGINX_URL" "$NGINX_PIDS"
        wrk_run h_zstd "$WRK_THREADS" "$WRK_CONNS" "$CANOPY_OBJ_URL" "$SERVER_PID" 'Accept-Encoding: zstd'
        # one connection: per-request latency, no queueing
        wrk_run h1_canopy 1 1 "$CANOPY_OBJ_URL" "$SERVER_PID"
        wrk_run h1_nginx 1 1 "$NGINX_URL" "$NGINX_PIDS"
        wrk_run h1_zstd 1 1 "$CANOPY_OBJ_URL" "$SERVER_PID" 'Accept-Encoding: zstd'
    done
    if grep -qv '^\s*$' "$LOGS/serve.err"; then
        odd "canopy serve wrote to stderr during the run: $(tail -n 3 "$LOGS/serve.err" | tr '\n' ' ')"
    fi
    stop_nginx
fi

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
for f in "$LOGS"/mount-*.err; do
    [[ -f $f ]] || continue
    if grep -qiE 'error|panic|warn' "$f"; then
        odd "$(basename "$f" .err): $(grep -m3 -iE 'error|panic|warn' "$f" | tr '\n' ' ')"
    fi
done

# ---------------------------------------------------------------- report
mib() { awk -v k="$1" 'BEGIN { if (k == "-" || k == "") print "-"; else printf "%.1f", k / 1024 }'; }
row() {   # row LABEL VALUE REFERENCE [FORMAT]
    local f=${4:-%.4f}
    printf '%-62s %12s %12s %8s\n' "$1" "$(fmt "$2" "$f")" "$(fmt "$3" "$f")" "$(ratio "$2" "$3")"
}
hdr() {
    echo
    printf '%-62s %12s %12s %8s\n' "$1" "$2" "$3" "ratio"
    printf '%s\n' "------------------------------------------------------------------------------------------------"
}

report() {
    local rev
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if ! git -C "$ROOT" diff --quiet HEAD 2>/dev/null; then rev="$rev+dirty"; fi
    if ((BUILD)); then
        rev="$rev (built from the working tree)"
    else
        rev="binary $CANOPY (working tree at $rev)"
    fi
    echo "canopy serve/mount benchmark — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cpus, $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); $CANOPY_VERSION, $rev"
    echo "packages: $NPKG .debs, $DEB_BYTES bytes (closure of: ${PACKAGES[*]}$( ((CLOSURE)) || echo ', no closure'))"
    echo "root 'base': $TREE_BYTES bytes in $TREE_FILES files, $TREE_ENTRIES entries; checkout (copies) on $CO_FS"
    echo "load average before/after: $LOAD_BEFORE / $LOAD_AFTER (other work on the machine makes figures noisy)"
    echo "figures: median of $RUNS runs; ratio = canopy / reference"

    if want warm; then
        hdr "1. warm reads (wall s; ref = checkout on $CO_FS)" "canopy" "reference"
        local w label
        for w in "big:largest $LARGEST files read again $REREADS times" \
            "stat:find -type f | xargs stat, 2nd pass" \
            "all:read every file (find | xargs cat), 2nd pass" \
            "open:open+read+close one small file $OPENS times" \
            "openbig:open+read+close the largest file $BIG_OPENS times" \
            "pread:largest $LARGEST files read $REREADS times, one open each (pread)" \
            "exec:chroot DIR bash -c true + python3.11 -c pass, 20 times"; do
            label=${w#*:}
            w=${w%%:*}
            row "$label: mount, passthrough" "$(m "w_${w}_pt")" "$(m "w_${w}_ext4")"
            row "$label: mount, --no-passthrough" "$(m "w_${w}_nopt")" "$(m "w_${w}_ext4")"
            row "$label: FUSE floor (memory)" "$(m "w_${w}_floor")" "$(m "w_${w}_ext4")"
            row "$label: FUSE floor without opens (OPEN: ENOSYS)" "$(m "w_${w}_noopen")" "$(m "w_${w}_ext4")"
            row "  mount, passthrough vs the FUSE floor" "$(m "w_${w}_pt")" "$(m "w_${w}_floor")"
            if [[ -n $COMPARE ]]; then
                row "  --compare binary, passthrough (vs ext4)" "$(m "w_${w}_cmp")" "$(m "w_${w}_ext4")"
                row "  --compare binary vs the first, passthrough" "$(m "w_${w}_cmp")" "$(m "w_${w}_pt")"
            fi
        done
        echo "  FUSE floor: $FLOOR serving the checkout from memory (client/examples/fuse_floor.rs);" \
            "variants alternate within each run: ${WARM_VARIANTS[*]}"
        echo "  largest $LARGEST files: $BIG_BYTES bytes ($(mib $((BIG_BYTES / 1024))) MiB), read $REREADS times;" \
            "warm read rate: mount $(awk -v b="$((BIG_BYTES * REREADS))" -v t="$(m w_big_pt)" 'BEGIN { printf "%.0f", b / 1048576 / t }') MiB/s," \
            "--no-passthrough $(awk -v b="$((BIG_BYTES * REREADS))" -v t="$(m w_big_nopt)" 'BEGIN { printf "%.0f", b / 1048576 / t }') MiB/s," \
            "checkout $(awk -v b="$((BIG_BYTES * REREADS))" -v t="$(m w_big_ext4)" 'BEGIN { printf "%.0f", b / 1048576 / t }') MiB/s"
    fi
    if want cold; then
        hdr "2. cold: empty cache, page cache dropped (wall s)" "canopy" "reference"
        row "mount --root base: start -> \"mounted at\" (none)" "$(m c_ready)" "-"
        row "find MNT | wc -l after that (find CHECKOUT | wc -l)" "$(m c_find)" "$(m c_find_ref)"
        row "mount start + find (find CHECKOUT | wc -l)" "$(m c_total)" "$(m c_find_ref)"
        row "largest $LARGEST files, cat, fetched from the server (cat CHECKOUT)" "$(m c_big)" "$(m c_big_ref)"
        row "chroot MNT /bin/bash -c true, passthrough (chroot CHECKOUT)" "$(m c_chroot_pt)" "$(m c_chroot_ref)"
        row "chroot MNT /bin/bash -c true, --no-passthrough (chroot CHECKOUT)" "$(m c_chroot_nopt)" "$(m c_chroot_ref)"
        row "  (same chroot again, warm: passthrough)" "$(m c_chroot_pt_warm)" "$(m c_chroot_ref_warm)"
        row "  (same chroot again, warm: --no-passthrough)" "$(m c_chroot_nopt_warm)" "$(m c_chroot_ref_warm)"
        row "  (SIGTERM -> canopy mount exited and unmounted)" "$(m c_stop)" "-"
        echo "  $TREE_ENTRIES entries in the root; the cold mount fetches the root's commit and one tree pack"
    fi
    if want share; then
        local one
        one=$(m s_one)
        hdr "3. page cache: growth of Cached: reading every file (MiB)" "MiB" "x one root" 
        printf '%-62s %12s %12s %8s\n' "one root (checkout r1), read once" "$(mib "$one")" "1.00" "-"
        printf '%-62s %12s %12s %8s\n' "$NROOTS checkouts r1..r$NROOTS (copies), each read" "$(mib "$(m s_co)")" "$(ratio "$(m s_co)" "$one")" "-"
        printf '%-62s %12s %12s %8s\n' "one mount of all roots, r1..r$NROOTS read, passthrough" "$(mib "$(m s_pt)")" "$(ratio "$(m s_pt)" "$one")" "-"
        printf '%-62s %12s %12s %8s\n' "one mount of all roots, r1..r$NROOTS read, --no-passthrough" "$(mib "$(m s_nopt)")" "$(ratio "$(m s_nopt)" "$one")" "-"
        printf '%-62s %12s %12s %8s\n' "mount (passthrough) vs $NROOTS checkouts" "$(mib "$(m s_pt)")" "$(mib "$(m s_co)")" "$(ratio "$(m s_pt)" "$(m s_co)")"
        echo "  page cache by file (fincore, after reading every root; distinct file identities read: $(mib "$IDENT_KIB") MiB):" \
            "through the mount, passthrough $(mib "$(m s_pt_held)") MiB ($(ratio "$(m s_pt_held)" "$IDENT_KIB")× the identities;" \
            "its cache files $(mib "$(m s_pt_files)") MiB, the passthrough part of which is the same pages)," \
            "--no-passthrough $(mib "$(m s_nopt_held)") MiB ($(ratio "$(m s_nopt_held)" "$IDENT_KIB")×; its cache files $(mib "$(m s_nopt_files)") MiB)"
        echo "  read time after drop_caches (s): one root $(m s_one_t), $NROOTS checkouts $(m s_co_t)," \
            "mount $(m s_pt_t) (ratio vs checkouts $(ratio "$(m s_pt_t)" "$(m s_co_t)")), --no-passthrough $(m s_nopt_t)"
        echo "  one root r1: $R1_BYTES bytes ($(mib $((R1_BYTES / 1024))) MiB) on disk;" \
            "mount's cache after reading all $NROOTS roots: $CACHE_BYTES bytes ($(mib $((CACHE_BYTES / 1024))) MiB);" \
            "canopy mount RSS with every root: $(mib "$MOUNT_RSS") MiB"
        echo "  first read of all $NROOTS roots through the mount (fetching every object): $(m s_fill_pt) s passthrough, $(m s_fill_nopt) s --no-passthrough"
    fi
    if want http; then
        hdr "4. GET one object, wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION" "canopy" "nginx"
        row "requests/s" "$(m h_canopy_rps)" "$(m h_nginx_rps)" "%.0f"
        row "transfer MiB/s" "$(m h_canopy_mibs)" "$(m h_nginx_mibs)" "%.1f"
        row "latency p50 (ms)" "$(m h_canopy_p50)" "$(m h_nginx_p50)" "%.3f"
        row "latency p99 (ms)" "$(m h_canopy_p99)" "$(m h_nginx_p99)" "%.3f"
        row "server CPU busy (cores, of $(nproc); wrk shares them)" "$(m h_canopy_cpu)" "$(m h_nginx_cpu)" "%.2f"
        row "server CPU ms per request" "$(m h_canopy_cpureq)" "$(m h_nginx_cpureq)" "%.3f"
        row "canopy only, Accept-Encoding: zstd — requests/s (vs nginx, plain)" "$(m h_zstd_rps)" "$(m h_nginx_rps)" "%.0f"
        row "canopy only, Accept-Encoding: zstd — wire MiB/s (vs nginx, plain)" "$(m h_zstd_mibs)" "$(m h_nginx_mibs)" "%.1f"
        row "canopy only, Accept-Encoding: zstd — server CPU busy (vs nginx)" "$(m h_zstd_cpu)" "$(m h_nginx_cpu)" "%.2f"
        row "canopy only, Accept-Encoding: zstd — CPU ms/request (vs nginx)" "$(m h_zstd_cpureq)" "$(m h_nginx_cpureq)" "%.3f"
        hdr "   same, one connection: wrk -t1 -c1 -d$WRK_DURATION" "canopy" "nginx"
        row "requests/s" "$(m h1_canopy_rps)" "$(m h1_nginx_rps)" "%.0f"
        row "latency p50 (ms)" "$(m h1_canopy_p50)" "$(m h1_nginx_p50)" "%.3f"
        row "latency p99 (ms)" "$(m h1_canopy_p99)" "$(m h1_nginx_p99)" "%.3f"
        row "canopy only, Accept-Encoding: zstd — requests/s (vs nginx, plain)" "$(m h1_zstd_rps)" "$(m h1_nginx_rps)" "%.0f"
        row "canopy only, Accept-Encoding: zstd — latency p50 (ms) (vs nginx)" "$(m h1_zstd_p50)" "$(m h1_nginx_p50)" "%.3f"
        echo "  object: $OBJ_FILE, $OBJ_SIZE bytes, /v1/objects/$OBJ_ID;" \
            "zstd on the wire: ${WIRE_ZSTD:-not compressed} bytes (zstd -3: $OBJ_ZSTD)"
        echo "  nginx $(nginx -v 2>&1 | sed 's#.*/##'): worker_processes auto, sendfile on, access_log off, keepalive_requests 1000000;" \
            "canopy serve without -v (no access log). wrk runs on the same $(nproc) cpus."
    fi
    local k
    echo
    printf 'every run:'
    for k in $(printf '%s\n' "${!VALS[@]}" | grep -v '^w_warmup$' | sort); do
        printf ' %s=[%s]' "$k" "$(echo ${VALS[$k]} | tr ' ' ,)"
    done
    echo
    if ((${#ODD[@]})); then
        echo "notes on canopy's behaviour during the run:"
        printf '  - %s\n' "${ODD[@]}"
    fi
    local args=()
    ((BUILD)) || args+=(--canopy "$CANOPY" --floor "$FLOOR")
    [[ -n $COMPARE ]] && args+=(--compare "$COMPARE")
    ((RUNS != 3)) && args+=(--runs "$RUNS")
    ((NROOTS != 10)) && args+=(--roots "$NROOTS")
    ((LARGEST != 20)) && args+=(--largest "$LARGEST")
    [[ $WRK_DURATION != 10s ]] && args+=(--wrk-duration "$WRK_DURATION")
    ((WRK_THREADS != 2)) && args+=(--wrk-threads "$WRK_THREADS")
    ((WRK_CONNS != 32)) && args+=(--wrk-connections "$WRK_CONNS")
    [[ $OBJECT_SIZE != 256K ]] && args+=(--object-size "$OBJECT_SIZE")
    [[ $ONLY != warm,cold,share,http ]] && args+=(--only "$ONLY")
    ((CLOSURE)) || args+=(--no-closure)
    [[ ${PACKAGES[*]} != "${DEFAULT_PACKAGES[*]}" ]] && args+=("${PACKAGES[@]}")
    echo "reproduce: benches/mount.sh ${args[*]}"
}

mkdir -p "$(dirname "$OUT")"
report | tee "$OUT"
say "report written to $OUT"
