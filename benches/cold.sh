#!/usr/bin/env bash
# benches/cold.sh — a host that has nothing yet: canopy serve + a fresh canopy mount
# (empty cache) against the plain ways of getting the same software, same run.
#
# On one store built from real .debs, measures:
#   1. read every file of the root through a fresh mount (start included), with
#      prefetch (directory packs) and with --no-prefetch, vs downloading the same tree
#      as one tar.zst from nginx and unpacking it (curl | zstd -d | tar -x); beside
#      them the same read through a fresh mount of the FUSE floor (a minimal FUSE file
#      system serving the tree from memory, client/examples/fuse_floor.rs): what the
#      reads alone cost through any FUSE file system, so how near the reference a FUSE
#      cold path can get at all
#   2. `chroot ROOT python3.11 -c 'import json, ssl'` and `chroot ROOT /bin/bash -c true`
#      from a fresh mount vs the same on a checkout whose pages were evicted
#   3. the same programs from a fresh mount of a root whose access profile (`canopy
#      profile record`) is replayed: counted from the mount's start, and once the replay
#      is done
# Page caches are emptied file by file (fdatasync + posix_fadvise DONTNEED on the
# server's store, the tar.zst, the checkout), since /proc/sys/vm/drop_caches may not be
# writable. Prints a table (and writes it to target/bench-cold.txt). Figures are
# reported, never asserted. See benches/README.md.
set -euo pipefail
export LC_ALL=C

DEFAULT_PACKAGES=(bash coreutils python3.11 perl-base grep sed findutils tar gzip)

usage() {
    cat <<'EOF'
usage: benches/cold.sh [options] [PACKAGE...]

Benchmarks a fresh `canopy mount` (empty cache) against a tar.zst of the same tree from
nginx and against a checkout with a cold page cache, on the dependency closure
(Depends + Pre-Depends) of PACKAGE... (default: bash coreutils python3.11 perl-base grep
sed findutils tar gzip).

options:
  --debs DIR          .deb cache, reused when present (default: target/bench-debs)
  --runs N            repetitions; the median is reported (default: 3)
  --only LIST         run only these measurements, comma-separated: whole (every file of
                      the root), programs (python, bash, profiles) (default: both)
  --out FILE          also write the report here (default: target/bench-cold.txt)
  --no-closure        use exactly PACKAGE..., without their dependencies
  --no-build          do not run `cargo build --release`; use target/release/canopy
  --canopy PATH       use this canopy binary (implies --no-build)
  --floor PATH        use this fuse_floor binary (default: target/release/examples/fuse_floor,
                      built unless --no-build / --canopy)
  --variant LABEL=PATH[:FLAGS]
                      also measure the fresh mounts with binary PATH (mount FLAGS, split
                      on spaces, e.g. '--no-prefetch'), interleaved with the others in
                      every run; rows labelled LABEL (repeatable; for A/B comparisons)
  --wait-timeout S    how long to wait for the server / a mount to come up (default: 60)
  --step-timeout S    bound on each measured command (default: 600)
  --keep              keep the scratch directory afterwards
  --tmp DIR           make the scratch directory (store, checkout, caches, unpacked trees)
                      under DIR instead of target/bench-tmp, e.g. on another file system
  -h, --help          this text

Needs root (FUSE mounts, chroot) and installs nginx, curl, zstd, dpkg-dev and python3
with apt-get when missing. Only 127.0.0.1 is used.
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
DEBS=$ROOT/target/bench-debs
RUNS=3
OUT=$ROOT/target/bench-cold.txt
CLOSURE=1
BUILD=1
CANOPY=$ROOT/target/release/canopy
FLOOR=$ROOT/target/release/examples/fuse_floor
WAIT_TIMEOUT=60
STEP_TIMEOUT=600
KEEP=0
SCRATCH=
ONLY=whole,programs
PACKAGES=()
# Fresh-mount variants measured in every run, in order: LABEL, binary, mount flags.
VLABELS=(prefetch noprefetch)
declare -A VBIN=() VFLAGS=([prefetch]="" [noprefetch]="--no-prefetch")
while (($#)); do
    case $1 in
        --debs) DEBS=${2:?--debs needs a directory}; shift 2 ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --only) ONLY=${2:?--only needs a list}; shift 2 ;;
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        --no-closure) CLOSURE=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --canopy) CANOPY=${2:?--canopy needs a path}; BUILD=0; shift 2 ;;
        --floor) FLOOR=${2:?--floor needs a path}; shift 2 ;;
        --variant)
            spec=${2:?--variant needs LABEL=PATH[:FLAGS]}
            [[ $spec =~ ^([a-z0-9_-]+)=([^:]+)(:(.*))?$ ]] || die "--variant $spec: want LABEL=PATH[:FLAGS]"
            label=${BASH_REMATCH[1]//-/_}
            VLABELS+=("$label")
            VBIN[$label]=${BASH_REMATCH[2]}
            VFLAGS[$label]=${BASH_REMATCH[4]}
            shift 2 ;;
        --wait-timeout) WAIT_TIMEOUT=${2:?--wait-timeout needs seconds}; shift 2 ;;
        --step-timeout) STEP_TIMEOUT=${2:?--step-timeout needs seconds}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --tmp) SCRATCH=${2:?--tmp needs a directory}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; PACKAGES+=("$@"); break ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) PACKAGES+=("$1"); shift ;;
    esac
done
((${#PACKAGES[@]})) || PACKAGES=("${DEFAULT_PACKAGES[@]}")
declare -A DO=()
IFS=, read -r -a _only <<<"$ONLY"
for w in "${_only[@]}"; do
    case $w in whole|programs) DO[$w]=1 ;; *) die "--only: unknown measurement '$w' (whole,programs)" ;; esac
done
want() { [[ -n ${DO[$1]:-} ]]; }
for v in RUNS WAIT_TIMEOUT STEP_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v,,} must be a positive integer, got '${!v}'"
done
[[ $DEBS = /* ]] || DEBS=$PWD/$DEBS
[[ $OUT = /* ]] || OUT=$PWD/$OUT
[[ $CANOPY = /* ]] || CANOPY=$PWD/$CANOPY
[[ $FLOOR = /* ]] || FLOOR=$PWD/$FLOOR
[[ -z $SCRATCH || $SCRATCH = /* ]] || SCRATCH=$PWD/$SCRATCH
for v in "${VLABELS[@]}"; do
    b=${VBIN[$v]:-$CANOPY}
    [[ $b = /* ]] || b=$PWD/$b
    VBIN[$v]=$b
done
[[ $(id -u) -eq 0 ]] || die "needs root (FUSE mounts, chroot)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing: modprobe fuse"

ensure_packages nginx:nginx curl:curl zstd:zstd dpkg-deb:dpkg-dev python3:python3
require_tools nginx curl zstd dpkg-deb apt-get apt-cache tar find xargs chroot timeout \
    mountpoint umount ss awk sort date python3
build_canopy
if ((BUILD)); then
    (cd "$ROOT" && cargo build --release -p canopy-client --example fuse_floor) ||
        die "cargo build --release --example fuse_floor failed (or pass --floor PATH)"
fi
[[ -x $FLOOR ]] || die "fuse_floor binary not found at $FLOOR (build it: cargo build --release -p canopy-client --example fuse_floor, or pass --floor PATH)"
for v in "${VLABELS[@]}"; do
    [[ -x ${VBIN[$v]} ]] || die "variant $v: ${VBIN[$v]} is not an executable"
done
CANOPY_VERSION=$("$CANOPY" --version 2>/dev/null || echo "canopy ?")
fetch_debs

SERVER_PID=
URL=
NGINX_PID=
MOUNT_PIDS=()
FLOOR_PID=
ODD=()
scratch cold
if [[ -n $SCRATCH ]]; then
    rmdir -- "$TMP"
    TMP=$(mktemp -d "$SCRATCH/cold.XXXXXX") || die "--tmp $SCRATCH: cannot make a directory there"
fi
S=$TMP/store
LOGS=$TMP/logs
mkdir -p "$LOGS"
FAILED_LOG=$ROOT/target/bench-cold-failed.log
export TIMEFILE=$LOGS/time
declare -A VALS=()

odd() { ODD+=("$*"); printf 'note: %s\n' "$*" >&2; }

mounts_under_tmp() {
    awk -v t="$TMP/" '{ p = $5; gsub(/\\040/, " ", p); if (index(p, t) == 1) print p }' /proc/self/mountinfo |
        sort -r
}

release() {
    local m p
    for p in "${MOUNT_PIDS[@]}"; do stop_pid "$p"; done
    stop_pid "$SERVER_PID"
    stop_pid "$NGINX_PID"
    stop_pid "$FLOOR_PID"
    while read -r m; do
        [[ -n $m ]] || continue
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(mounts_under_tmp)
    [[ -z $(mounts_under_tmp) ]]
}

# evict PATH...: every regular file under PATH... leaves the page cache (written back
# first, then dropped), as after a reboot, without needing drop_caches.
evict() {
    find "$@" -type f -print0 | python3 -c '
import os, sys
for p in sys.stdin.buffer.read().split(b"\0"):
    if not p:
        continue
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        continue
    try:
        os.fdatasync(fd)
    except OSError:
        pass
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
'
}

# mount_fresh MNT VARIANT ARGS...: `canopy mount` of VARIANT's binary on MNT with an
# empty cache of its own; the pid in MPID; waits for "mounted at".
mount_fresh() {
    local mnt=$1 bin=${VBIN[$2]} name
    shift 2
    name=$(basename "$mnt")
    mkdir -p "$mnt"
    discard "$TMP/cache-$name"
    : >"$LOGS/mount-$name.out"
    "$bin" mount "$URL" "$mnt" --trust "$TMP/server.pub" --cache-dir "$TMP/cache-$name" "$@" \
        >"$LOGS/mount-$name.out" 2>"$LOGS/mount-$name.err" &
    MPID=$!
    MOUNT_PIDS+=("$MPID")
    wait_line "$LOGS/mount-$name.out" '^mounted at ' "$MPID" "canopy mount ($name)"
}

# wait_replayed ERRFILE PID: wait until a `canopy -v mount` says its profile was
# replayed, at most WAIT_TIMEOUT seconds.
wait_replayed() {
    local deadline=$(($(date +%s) + WAIT_TIMEOUT))
    until grep -q 'replayed the profile' "$1" 2>/dev/null; do
        kill -0 "$2" 2>/dev/null || fail_step "canopy mount exited before its replay" "$1"
        (($(date +%s) < deadline)) || fail_step "no replay after ${WAIT_TIMEOUT}s" "$1"
        sleep 0.005
    done
}

unmount() {   # unmount MNT PID
    stop_pid "$2"
    mountpoint -q "$1" && { umount "$1" 2>/dev/null || umount -l "$1"; }
    discard "$TMP/cache-$(basename "$1")"
}

# discard PATH: moves PATH out of the way (into $TMP/trash), removed only at exit. On
# ext4 without a journal, files created within minutes of a large removal nearby cost
# several times more (the inode allocator skips recently freed inodes): removing one
# step's ~4,500 files (an unpacked tree, a mount's cache) made the next step's creates
# slow, which favoured whichever step came first. Every step now writes into a
# directory that nothing was removed from.
DISCARDED=0
discard() {
    [[ -e $1 ]] || return 0
    mkdir -p "$TMP/trash"
    mv -- "$1" "$TMP/trash/$((DISCARDED++))"
}

# ---------------------------------------------------------------- the store, the references
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "store: import $NPKG .debs, assemble base"
"$CANOPY" --store "$S" init >"$LOGS/init.log" 2>&1 || fail_step "canopy init failed" "$LOGS/init.log"
"$CANOPY" --store "$S" key show >"$TMP/server.pub"
"$CANOPY" --store "$S" import deb "${DEBFILES[@]}" >"$LOGS/import.log" 2>&1 ||
    fail_step "canopy import deb failed" "$LOGS/import.log"
"$CANOPY" --store "$S" assemble base "${PKGNAMES[@]}" "${ASSEMBLE_FLAGS[@]}" >"$LOGS/assemble.log" 2>&1 ||
    fail_step "canopy assemble base failed" "$LOGS/assemble.log"
if want programs; then
    # Roots of the same tree, each with the access profile of one program.
    for r in py sh; do
        "$CANOPY" --store "$S" assemble "$r" "${PKGNAMES[@]}" "${ASSEMBLE_FLAGS[@]}" >>"$LOGS/assemble.log" 2>&1 ||
            fail_step "canopy assemble $r failed" "$LOGS/assemble.log"
    done
    "$CANOPY" --store "$S" profile record py -- /usr/bin/python3.11 -c 'import json, ssl' \
        >"$LOGS/profile-py.log" 2>&1 || fail_step "canopy profile record py failed" "$LOGS/profile-py.log"
    "$CANOPY" --store "$S" profile record sh -- /bin/bash -c true \
        >"$LOGS/profile-sh.log" 2>&1 || fail_step "canopy profile record sh failed" "$LOGS/profile-sh.log"
    PROFILE_PY=$(head -n1 "$LOGS/profile-py.log")
    PROFILE_SH=$(head -n1 "$LOGS/profile-sh.log")
fi
CO=$TMP/co-base
"$CANOPY" --store "$S" checkout base "$CO" >"$LOGS/checkout.log" 2>&1 ||
    fail_step "canopy checkout base failed" "$LOGS/checkout.log"
TREE_BYTES=$(du -sb "$CO" | cut -f1)
TREE_FILES=$(find "$CO" -type f | wc -l)
TREE_DIRS=$(find "$CO" -type d | wc -l)
CO_FS=$(findmnt -n -o FSTYPE -T "$CO" 2>/dev/null || stat -f -c %T "$CO")
PY=/usr/bin/python3.11
[[ -x $CO$PY ]] || die "the root has no $PY (is python3.11 in the package set?)"

say "tar.zst of the checkout for nginx"
mkdir -p "$TMP/www"
tar -C "$CO" --numeric-owner -cf - . | zstd -q -3 -T0 -o "$TMP/www/root.tar.zst"
TAR_BYTES=$(stat -c %s "$TMP/www/root.tar.zst")
NGINX_PORT=$(free_port) || die "no free port for nginx"
start_nginx "$TMP/nginx" "$NGINX_PORT" "$TMP/www" /root.tar.zst "access_log off;"
TAR_URL=http://127.0.0.1:$NGINX_PORT/root.tar.zst

# serve_fresh: a new `canopy serve` (the previous one stopped), its URL in URL. Every
# fresh mount gets a server that just started, with nothing in memory (no object read,
# no zstd form computed) and its store's pages evicted, as nginx has for the tar.zst:
# one server shared by the variants would favour whichever runs after the first.
serve_fresh() {
    stop_pid "$SERVER_PID"
    evict "$S/objects"
    # Emptied here: the new server's shell truncates it only once it runs, and until
    # then wait_line would read the previous server's address.
    : >"$LOGS/serve.out"
    "$CANOPY" --store "$S" serve --listen 127.0.0.1:0 >"$LOGS/serve.out" 2>"$LOGS/serve.err" &
    SERVER_PID=$!
    wait_line "$LOGS/serve.out" '^serving .* on (http://127\.0\.0\.1:[0-9]+)$' "$SERVER_PID" "canopy serve"
    URL=${BASH_REMATCH[1]}
}

READ_ALL='find "$1" -type f -print0 | xargs -0 -r cat >/dev/null'
# tar_step: the reference for the whole tree, into a new directory (kept until exit).
tar_step() {
    local dir=$TMP/unpacked-$run
    mkdir -p "$dir"
    evict "$TMP/www" "$S/objects"
    timed tar 'curl -sf "$1" | zstd -q -d | tar -C "$2" -xf -' "$TAR_URL" "$dir"
    discard "$dir"
}
# floor_step: the FUSE floor serving the checkout, read whole through a fresh mount (its
# own mountpoint each time, so the kernel has none of its pages). The floor copies the
# tree into memory before it mounts, so the time counts from its "mounted at": the
# reads alone, each answered from memory with no other work.
floor_step() {
    local mnt=$TMP/floor-$run
    mkdir -p "$mnt"
    : >"$LOGS/floor.out"
    "$FLOOR" "$CO" "$mnt" >"$LOGS/floor.out" 2>"$LOGS/floor.err" &
    FLOOR_PID=$!
    wait_line "$LOGS/floor.out" '^mounted at ' "$FLOOR_PID" "fuse_floor"
    timed floor "$READ_ALL" "$mnt"
    stop_pid "$FLOOR_PID"
    FLOOR_PID=
    if mountpoint -q "$mnt"; then umount "$mnt" 2>/dev/null || umount -l "$mnt"; fi
}
M=$TMP/mnt
# ---------------------------------------------------------------- runs
for ((run = 1; run <= RUNS; run++)); do
    say "run $run/$RUNS"
    # 1. the whole tree: nginx tar.zst + unpack, vs a fresh mount reading every file;
    # the reference goes first in odd runs, last in even ones. The variants take turns
    # at each place (run r starts with the r-th): the one right after tar's unpacking
    # or another mount's 157 MB of cache writes meets their writeback, so a fixed order
    # favours whichever comes later.
    ORDER=("${VLABELS[@]:$(((run - 1) % ${#VLABELS[@]}))}" "${VLABELS[@]:0:$(((run - 1) % ${#VLABELS[@]}))}")
    if want whole; then
        ((run % 2)) && tar_step
        for v in "${ORDER[@]}"; do
            read -ra flags <<<"${VFLAGS[$v]}"
            serve_fresh
            t0=$(now)
            mount_fresh "$M" "$v" --root base "${flags[@]}"
            record "ready_$v" "$(elapsed "$t0" "$(now)")"
            timed "read_$v" "$READ_ALL" "$M"
            record "whole_$v" "$(awk -v a="${VALS[ready_$v]##* }" -v b="$T" 'BEGIN { printf "%.4f", a + b }')"
            unmount "$M" "$MPID"
        done
        floor_step
        ((run % 2)) || tar_step
    fi
    # 2. programs from a fresh mount vs a checkout with its pages evicted.
    want programs || continue
    for prog in python bash; do
        if [[ $prog == python ]]; then
            cmd='chroot "$1" '"$PY"' -c "import json, ssl"'
        else
            cmd='chroot "$1" /bin/bash -c true'
        fi
        evict "$CO"
        timed "${prog}_ext4" "$cmd" "$CO"
        for v in "${VLABELS[@]}"; do
            read -ra flags <<<"${VFLAGS[$v]}"
            serve_fresh
            mount_fresh "$M" "$v" --root base "${flags[@]}"
            timed "${prog}_$v" "$cmd" "$M"
            unmount "$M" "$MPID"
        done
        # 3. the root's profile replayed: from the mount's start (with and without
        # directory prefetch), and the program alone once the replay is done.
        proot=py
        [[ $prog == bash ]] && proot=sh
        for v in profile profile_noprefetch; do
            args=(--root "$proot")
            [[ $v == profile_noprefetch ]] && args+=(--no-prefetch)
            serve_fresh
            t0=$(now)
            mount_fresh "$M" prefetch "${args[@]}"
            t1=$(now)
            timed "${prog}_$v" "$cmd" "$M"
            record "${prog}_${v}_start" "$(awk -v a="$(elapsed "$t0" "$t1")" -v b="$T" 'BEGIN { printf "%.4f", a + b }')"
            unmount "$M" "$MPID"
        done
        serve_fresh
        mount_fresh "$M" prefetch --root "$proot" --no-prefetch -v
        wait_replayed "$LOGS/mount-$(basename "$M").err" "$MPID"
        timed "${prog}_replayed" "$cmd" "$M"
        unmount "$M" "$MPID"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
for f in "$LOGS"/mount-*.err; do
    [[ -f $f ]] || continue
    if grep -qiE 'error|panic|mismatch' "$f"; then
        odd "$(basename "$f" .err): $(grep -m3 -iE 'error|panic|mismatch' "$f" | tr '\n' ' ')"
    fi
done

# ---------------------------------------------------------------- report
row() {   # row LABEL VALUE REFERENCE
    printf '%-66s %10s %10s %8s\n' "$1" "$(fmt "$2" %.3f)" "$(fmt "$3" %.3f)" "$(ratio "$2" "$3")"
}
vname() {   # vname VARIANT: how a row names it
    case $1 in
        prefetch) echo prefetch ;;
        noprefetch) echo --no-prefetch ;;
        *) echo "$1 (${VBIN[$1]##*/}${VFLAGS[$1]:+ ${VFLAGS[$1]}})" ;;
    esac
}
report() {
    local rev k
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    ((BUILD)) || rev="binary $CANOPY (working tree at $rev)"
    echo "canopy cold-host benchmark — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cpus; $CANOPY_VERSION, $rev"
    echo "packages: $NPKG .debs, $DEB_BYTES bytes (closure of: ${PACKAGES[*]}$( ((CLOSURE)) || echo ', no closure'))"
    echo "root 'base': $TREE_BYTES bytes in $TREE_FILES files, $TREE_DIRS directories; checkout on $CO_FS; tar.zst $TAR_BYTES bytes"
    echo "load average before/after: $LOAD_BEFORE / $LOAD_AFTER"
    echo "figures: wall seconds, median of $RUNS runs; ratio = canopy / reference"
    echo
    if want whole; then
        printf '%-66s %10s %10s %8s\n' "every file of the root (ref: curl tar.zst | zstd -d | tar -x)" canopy reference ratio
        for v in "${VLABELS[@]}"; do
            row "fresh mount + read every file, $(vname "$v")" "$(m "whole_$v")" "$(m tar)"
        done
        row "  of which mount start -> \"mounted at\", prefetch" "$(m ready_prefetch)" "-"
        row "  read every file alone, prefetch" "$(m read_prefetch)" "$(m tar)"
        row "FUSE floor (memory), fresh mount: read every file after \"mounted at\"" "$(m floor)" "$(m tar)"
        echo
    fi
    if want programs; then
        printf '%-66s %10s %10s %8s\n' "programs, cold (ref: the checkout, pages evicted)" canopy reference ratio
        for v in "${VLABELS[@]}"; do
            row "python3.11 -c 'import json, ssl', fresh mount, $(vname "$v")" "$(m "python_$v")" "$(m python_ext4)"
        done
        for v in "${VLABELS[@]}"; do
            row "/bin/bash -c true, fresh mount, $(vname "$v")" "$(m "bash_$v")" "$(m bash_ext4)"
        done
        echo
        printf '%-66s %10s %10s %8s\n' "programs, profile replayed (ref: the checkout, pages evicted)" canopy reference ratio
        row "python3.11 …, mount start -> done, profile" "$(m python_profile_start)" "$(m python_ext4)"
        row "python3.11 …, mount start -> done, profile, --no-prefetch" "$(m python_profile_noprefetch_start)" "$(m python_ext4)"
        row "python3.11 …, after \"mounted at\", profile" "$(m python_profile)" "$(m python_ext4)"
        row "python3.11 …, replay done, then program (--no-prefetch)" "$(m python_replayed)" "$(m python_ext4)"
        row "/bin/bash -c true, mount start -> done, profile" "$(m bash_profile_start)" "$(m bash_ext4)"
        row "/bin/bash -c true, mount start -> done, profile, --no-prefetch" "$(m bash_profile_noprefetch_start)" "$(m bash_ext4)"
        row "/bin/bash -c true, after \"mounted at\", profile" "$(m bash_profile)" "$(m bash_ext4)"
        row "/bin/bash -c true, replay done, then program (--no-prefetch)" "$(m bash_replayed)" "$(m bash_ext4)"
        echo "profiles: $PROFILE_PY; $PROFILE_SH"
        echo
    fi
    printf 'every run:'
    for k in $(printf '%s\n' "${!VALS[@]}" | sort); do
        printf ' %s=[%s]' "$k" "$(echo ${VALS[$k]} | tr ' ' ,)"
    done
    echo
    if ((${#ODD[@]})); then
        echo "notes:"
        printf '  - %s\n' "${ODD[@]}"
    fi
    local args=()
    ((BUILD)) || args+=(--canopy "$CANOPY" --floor "$FLOOR")
    for k in "${VLABELS[@]:2}"; do args+=(--variant "$k=${VBIN[$k]}${VFLAGS[$k]:+:${VFLAGS[$k]}}"); done
    ((RUNS != 3)) && args+=(--runs "$RUNS")
    [[ $ONLY != whole,programs ]] && args+=(--only "$ONLY")
    [[ -n $SCRATCH ]] && args+=(--tmp "$SCRATCH")
    ((CLOSURE)) || args+=(--no-closure)
    [[ ${PACKAGES[*]} != "${DEFAULT_PACKAGES[*]}" ]] && args+=("${PACKAGES[@]}")
    echo "reproduce: benches/cold.sh ${args[*]}"
}
mkdir -p "$(dirname "$OUT")"
report | tee "$OUT"
say "report written to $OUT"
