#!/usr/bin/env bash
# benches/netboot.sh — diskless boot: QEMU guests with / over `canopy serve --nfs`
# against the same root exported by nfs-ganesha from a `canopy checkout`.
#
# Builds the bootable root the boot test of tests/netboot.rs builds (NETBOOT_PACKAGES of
# tests/debs.rs: Debian 12, systemd, kernel, initramfs-tools, openssh-server), writes
# its boot files with `canopy netboot`, then, in a private network and mount namespace
# (guests reach the namespace's 127.0.0.1 as 10.0.2.2 through QEMU's user-mode
# network), boots 1 guest and then N guests at once (TCG) from each server, with the
# same kernel, initrds and command line except nfsroot's path. Measures the time from
# QEMU's start to systemd's "Reached target multi-user.target", the bytes the server
# sent on its NFS connections, the segments it received (about one per RPC request) and
# its CPU time. Prints a table (and writes it to target/bench-netboot.txt). Figures are
# reported, never asserted.
# See benches/README.md.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
usage: benches/netboot.sh [options]

Boots QEMU guests (TCG, user-mode network) whose / is NFSv3 from `canopy serve --nfs`,
and the same root from nfs-ganesha 4 (FSAL VFS) exporting a `canopy checkout` of the
same commit; 1 guest, then N at once, for each server. Reports the time from QEMU's
start to systemd's multi-user target, the bytes each server sent, segments received
(about one per request) and server CPU seconds, per boot and per guest.

options:
  --guests N          guests booting at once in the second measurement (default: 4)
  --runs N            repetitions of every measurement; the median is reported (default: 1)
  --mem MB            memory of each guest (default: 1024)
  --debs DIR          .deb cache (default: $CANOPY_TEST_DEBS, else target/test-debs, the
                      integration tests' cache); missing .debs are downloaded
  --store DIR         keep the store with the bootable root `node` here and reuse it in
                      later runs (default: a scratch store, built and removed each run;
                      building it runs the packages' scripts, mkinitramfs: minutes)
  --out FILE          also write the report here (default: target/bench-netboot.txt)
  --no-build          do not run `cargo build --release`; use target/release/canopy as is
  --canopy PATH       use this canopy binary (implies --no-build)
  --boot-timeout S    how long a guest may take to reach multi-user (default: 1800)
  --wait-timeout S    how long to wait for a server to come up (default: 60)
  --keep              keep the scratch directory (target/bench-tmp/...) afterwards
  -h, --help          this text

examples:
  benches/netboot.sh                                  # 1 guest and 4 guests, 1 run
  benches/netboot.sh --guests 10 --mem 768 --runs 3
  benches/netboot.sh --store target/netboot-store --canopy target/debug/canopy

Needs root (network and mount namespaces, ganesha) and apt-get to install
qemu-system-x86, nfs-ganesha, nfs-ganesha-vfs, rpcbind and jq when missing. Nothing
leaves the namespace: both servers listen on its 127.0.0.1 (NFS on 2049, the
portmapper on 111: canopy's own, or an `rpcbind -f -w` for ganesha with a private /run).
EOF
}

# ---------------------------------------------------------------- arguments
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
ARGS=("$@")
GUESTS=4
RUNS=1
MEM=1024
DEBS=${CANOPY_TEST_DEBS:-$ROOT/target/test-debs}
STORE=
OUT=$ROOT/target/bench-netboot.txt
BUILD=1
CANOPY=$ROOT/target/release/canopy
BOOT_TIMEOUT=1800
WAIT_TIMEOUT=60
KEEP=0

while (($#)); do
    case $1 in
        --guests) GUESTS=${2:?--guests needs a number}; shift 2 ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --mem) MEM=${2:?--mem needs megabytes}; shift 2 ;;
        --debs) DEBS=${2:?--debs needs a directory}; shift 2 ;;
        --store) STORE=${2:?--store needs a directory}; shift 2 ;;
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --canopy) CANOPY=${2:?--canopy needs a path}; BUILD=0; shift 2 ;;
        --boot-timeout) BOOT_TIMEOUT=${2:?--boot-timeout needs seconds}; shift 2 ;;
        --wait-timeout) WAIT_TIMEOUT=${2:?--wait-timeout needs seconds}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
for v in GUESTS RUNS MEM BOOT_TIMEOUT WAIT_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v,,} must be a positive integer, got '${!v}'"
done
[[ $DEBS = /* ]] || DEBS=$PWD/$DEBS
[[ $OUT = /* ]] || OUT=$PWD/$OUT
[[ $CANOPY = /* ]] || CANOPY=$PWD/$CANOPY
[[ -z $STORE || $STORE = /* ]] || STORE=$PWD/$STORE

[[ $(id -u) -eq 0 ]] || die "needs root (network and mount namespaces, ganesha, installing tools)"

# The package list is the boot test's, read from its one definition.
mapfile -t PACKAGES < <(sed -n '/^pub const NETBOOT_PACKAGES/,/^];/p' "$ROOT/tests/debs.rs" |
    grep -o '"[^"]*"' | tr -d '"')
((${#PACKAGES[@]} > 50)) || die "could not read NETBOOT_PACKAGES from $ROOT/tests/debs.rs"

# ---------------------------------------------------------------- outside the namespace
# Installing, building and downloading need the host's network: done first, then the
# script runs again inside fresh namespaces, where everything else happens.
if [[ ${CANOPY_BENCH_NETBOOT_NS:-} != 1 ]]; then
    ensure_packages qemu-system-x86_64:qemu-system-x86 ganesha.nfsd:nfs-ganesha \
        :nfs-ganesha-vfs rpcbind:rpcbind jq:jq ss:iproute2 unshare:util-linux
    build_canopy
    missing=()
    if [[ -z $STORE ]] || ! "$CANOPY" --store "$STORE" roots show node >/dev/null 2>&1; then
        mkdir -p "$DEBS"
        for p in "${PACKAGES[@]}"; do
            compgen -G "$DEBS/${p}_*.deb" >/dev/null || missing+=("$p")
        done
    fi
    if ((${#missing[@]})); then
        say "downloading ${#missing[@]} .debs into $DEBS"
        (cd "$DEBS" && apt-get -o APT::Sandbox::User=root -q download "${missing[@]}" >&2) ||
            die "apt-get download failed for: ${missing[*]}"
    fi
    ARGS+=(--no-build --canopy "$CANOPY" --debs "$DEBS")
    exec env CANOPY_BENCH_NETBOOT_NS=1 unshare --net --mount --propagation private -- \
        bash "$ROOT/benches/netboot.sh" "${ARGS[@]}"
fi

require_tools qemu-system-x86_64 ganesha.nfsd rpcbind rpcinfo jq ss ip
ip link set lo up
# rpcbind keeps its socket and state in /run: a private one, so the host's rpcbind (if
# any) is neither seen nor replaced. The mount goes with the namespace.
mount -t tmpfs -o mode=755 canopy-bench-run /run
CANOPY_VERSION=$("$CANOPY" --version 2>/dev/null || echo "canopy ?")
GANESHA_VERSION=$(dpkg-query -W -f '${Version}' nfs-ganesha 2>/dev/null || echo "?")
QEMU_VERSION=$(qemu-system-x86_64 --version | head -n1)

# ---------------------------------------------------------------- scratch space, processes
SERVER_PID=
RPCBIND_PID=
QEMU_PIDS=()
release() {   # at exit (common.sh's scratch)
    local pid
    for pid in "${QEMU_PIDS[@]}"; do stop_pid "$pid"; done
    stop_pid "$SERVER_PID"
    stop_pid "$RPCBIND_PID"
}
scratch netboot
LOGS=$TMP/logs
mkdir -p "$LOGS"
FAILED_LOG=$ROOT/target/bench-netboot-failed.log
S=${STORE:-$TMP/store}

# ---------------------------------------------------------------- the root, both ways
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ -n $STORE ]] && "$CANOPY" --store "$S" roots show node >/dev/null 2>&1; then
    say "reusing root 'node' in $S"
else
    DEBFILES=()
    for p in "${PACKAGES[@]}"; do
        f=$(compgen -G "$DEBS/${p}_*.deb" | sort -V | tail -n1) || die "no .deb for $p in $DEBS"
        DEBFILES+=("$f")
    done
    say "store $S: import ${#DEBFILES[@]} .debs, assemble and configure root 'node' (minutes)"
    [[ -d $S ]] || "$CANOPY" --store "$S" init >"$LOGS/init.log" 2>&1 ||
        fail_step "canopy init failed" "$LOGS/init.log"
    "$CANOPY" --store "$S" import deb "${DEBFILES[@]}" >"$LOGS/import.log" 2>&1 ||
        fail_step "canopy import deb failed" "$LOGS/import.log"
    "$CANOPY" --store "$S" assemble node "${PACKAGES[@]}" >"$LOGS/assemble.log" 2>&1 ||
        fail_step "canopy assemble failed" "$LOGS/assemble.log"
fi
BOOT=$TMP/boot
"$CANOPY" --store "$S" netboot node "$BOOT" --server 10.0.2.2 --json >"$LOGS/netboot.json" 2>"$LOGS/netboot.err" ||
    fail_step "canopy netboot failed" "$LOGS/netboot.err"
CMDLINE=$(jq -r .cmdline "$LOGS/netboot.json")
EXPORT=$(sed -n 's#.*nfsroot=10\.0\.2\.2:\([^,]*\),.*#\1#p' <<<"$CMDLINE")
[[ -n $EXPORT ]] || die "no nfsroot=10.0.2.2:PATH, in netboot's command line: $CMDLINE"
CHECKOUT=$TMP/checkout
say "checking out $EXPORT for ganesha"
"$CANOPY" --store "$S" checkout "${EXPORT#/}" "$CHECKOUT" >"$LOGS/checkout.log" 2>&1 ||
    fail_step "canopy checkout failed" "$LOGS/checkout.log"
NFILES=$(find "$CHECKOUT" -type f | wc -l)
NBYTES=$(find "$CHECKOUT" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')

# QEMU takes one initrd: the root's and canopy's images, each on a 4-byte boundary, as
# boot loaders lay them out.
INITRD=$TMP/initrd-and-canopy.img
cp "$BOOT/initrd.img" "$INITRD"
truncate -s $((($(stat -c %s "$INITRD") + 3) / 4 * 4)) "$INITRD"
cat "$BOOT/canopy.cpio" >>"$INITRD"
# Console on ttyS0. systemd logs to the kernel's ring buffer, unthrottled, so its
# "Reached target" lines reach the console even once a getty holds ttyS0 (its status
# lines stop then). No timer check (TCG's timer looks broken under load); a panic stops
# the guest.
GUEST_ARGS="console=ttyS0 systemd.log_target=kmsg printk.devkmsg=on no_timer_check panic=-1"

# Both sides read from a warm page cache: the store's objects and the checkout once.
tar -cf - -C "$S" . | cat >/dev/null
tar -cf - -C "$CHECKOUT" . | cat >/dev/null

# ---------------------------------------------------------------- servers
start_canopy() {
    "$CANOPY" --store "$S" serve --listen 127.0.0.1:0 --nfs 127.0.0.1:2049 \
        >"$LOGS/serve.out" 2>"$LOGS/serve.err" &
    SERVER_PID=$!
    wait_line "$LOGS/serve.out" '^exporting .* over NFSv3 on 127\.0\.0\.1:2049$' "$SERVER_PID" "canopy serve --nfs"
}

start_ganesha() {
    local mnt
    mnt=$(free_port 2049 111) || die "no free port found on 127.0.0.1"
    # No Bind_addr: ganesha resolves it with AI_ADDRCONFIG, which finds no address in a
    # namespace that has only a loopback; all addresses here are the namespace's lo.
    cat >"$TMP/ganesha.conf" <<EOF
NFS_CORE_PARAM {
    Protocols = 3;
    NFS_Port = 2049;
    MNT_Port = $mnt;
    Enable_NLM = false;
    Enable_RQUOTA = false;
}
NFSV4 { Graceless = true; }
EXPORT {
    Export_Id = 1;
    Path = $CHECKOUT;
    Pseudo = /node;
    Access_Type = RO;
    Squash = No_Root_Squash;
    Protocols = 3;
    Transports = TCP;
    SecType = sys;
    FSAL { Name = VFS; }
}
LOG { Default_Log_Level = WARN; }
EOF
    rpcbind -f -w >"$LOGS/rpcbind.out" 2>"$LOGS/rpcbind.err" &
    RPCBIND_PID=$!
    local deadline=$(($(date +%s) + WAIT_TIMEOUT))
    until rpcinfo -p 127.0.0.1 >/dev/null 2>&1; do
        kill -0 "$RPCBIND_PID" 2>/dev/null || fail_step "rpcbind exited" "$LOGS/rpcbind.err"
        (($(date +%s) < deadline)) || fail_step "rpcbind not answering after ${WAIT_TIMEOUT}s" "$LOGS/rpcbind.err"
        sleep 0.1
    done
    ganesha.nfsd -F -f "$TMP/ganesha.conf" -L "$LOGS/ganesha.log" -p "$TMP/ganesha.pid" \
        >"$LOGS/ganesha.out" 2>&1 &
    SERVER_PID=$!
    deadline=$(($(date +%s) + WAIT_TIMEOUT))
    until rpcinfo -t 127.0.0.1 mountd 3 >/dev/null 2>&1 && rpcinfo -t 127.0.0.1 nfs 3 >/dev/null 2>&1; do
        kill -0 "$SERVER_PID" 2>/dev/null || fail_step "ganesha.nfsd exited" "$LOGS/ganesha.log"
        (($(date +%s) < deadline)) || fail_step "ganesha.nfsd not answering after ${WAIT_TIMEOUT}s" "$LOGS/ganesha.log"
        sleep 0.2
    done
}

stop_servers() {
    stop_pid "$SERVER_PID"
    SERVER_PID=
    stop_pid "$RPCBIND_PID"
    RPCBIND_PID=
}


# bytes_acked, data_segs_in summed over the server's established NFS connections.
nfs_socket_counts() {
    ss -Htin state established '( sport = :2049 )' | awk '
        { for (i = 1; i <= NF; i++) {
              if ($i ~ /^bytes_acked:/) { split($i, a, ":"); sent += a[2] }
              if ($i ~ /^data_segs_in:/) { split($i, a, ":"); segs += a[2] } } }
        END { printf "%d %d\n", sent, segs }'
}

# ---------------------------------------------------------------- one measurement
# boot WHO N: N guests at once from the running server WHO; records, per run:
#   WHO-N-first / -last   seconds from QEMU start to multi-user, fastest / slowest guest
#   WHO-N-bytes           bytes the server sent on its NFS connections, all guests
#   WHO-N-segs            data segments it received on them (about one per RPC request)
#   WHO-N-cpu             server CPU seconds (user + system) during the boots
boot() {
    local who=$1 n=$2 cmdline=$CMDLINE i t0 c0 up=0 deadline at=() t bytes segs
    if [[ $who == ganesha ]]; then
        cmdline=${CMDLINE/"nfsroot=10.0.2.2:$EXPORT,"/"nfsroot=10.0.2.2:$CHECKOUT,"}
    fi
    c0=$(cpu_ticks "$SERVER_PID")
    QEMU_PIDS=()
    # The previous run's consoles hold the line waited for, until QEMU truncates them.
    for ((i = 1; i <= n; i++)); do rm -f "$LOGS/$who-$n-$i.console"; done
    t0=$EPOCHREALTIME
    for ((i = 1; i <= n; i++)); do
        qemu-system-x86_64 -accel tcg -m "$MEM" -smp 1 -no-reboot -display none -monitor none \
            -serial "file:$LOGS/$who-$n-$i.console" \
            -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
            -kernel "$BOOT/vmlinuz" -initrd "$INITRD" -append "$GUEST_ARGS $cmdline" \
            </dev/null >"$LOGS/$who-$n-$i.qemu" 2>&1 &
        QEMU_PIDS+=($!)
    done
    deadline=$(($(date +%s) + BOOT_TIMEOUT))
    while ((up < n)); do
        for ((i = 1; i <= n; i++)); do
            [[ -z ${at[i]:-} ]] || continue
            if grep -q 'Reached target.*Multi-User System' "$LOGS/$who-$n-$i.console" 2>/dev/null; then
                at[i]=$(elapsed "$t0" "$EPOCHREALTIME")
                up=$((up + 1))
                say "$who, $n guest(s): guest $i at multi-user after ${at[i]} s"
            elif ! kill -0 "${QEMU_PIDS[i - 1]}" 2>/dev/null; then
                fail_step "$who guest $i of $n stopped before multi-user" "$LOGS/$who-$n-$i.console"
            fi
        done
        (($(date +%s) < deadline)) || fail_step "$who guest not at multi-user after ${BOOT_TIMEOUT}s" "$LOGS/$who-$n-1.console"
        if ((up < n)); then sleep 0.5; fi
    done
    read -r bytes segs < <(nfs_socket_counts)
    record "$who-$n-cpu" "$(awk -v a="$c0" -v b="$(cpu_ticks "$SERVER_PID")" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.2f", (b - a) / hz }')"
    record "$who-$n-bytes" "$bytes"
    record "$who-$n-segs" "$segs"
    t=$(printf '%s\n' "${at[@]}" | sort -g)
    record "$who-$n-first" "$(head -n1 <<<"$t")"
    record "$who-$n-last" "$(tail -n1 <<<"$t")"
    for i in "${QEMU_PIDS[@]}"; do stop_pid "$i"; done
    QEMU_PIDS=()
}

for ((run = 1; run <= RUNS; run++)); do
    for who in canopy ganesha; do
        say "run $run of $RUNS: $who"
        "start_$who"
        boot "$who" 1
        if ((GUESTS > 1)); then boot "$who" "$GUESTS"; fi
        stop_servers
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
per() { awk -v v="$1" -v n="$2" -v s="$3" 'BEGIN { if (v == "-") print "-"; else printf "%.2f", v / n / s }'; }
{
    echo "diskless boot: canopy serve --nfs vs nfs-ganesha $GANESHA_VERSION (FSAL VFS, a checkout of the same commit)"
    echo "$CANOPY_VERSION; $QEMU_VERSION, TCG, -smp 1, ${MEM} MB, virtio-net, user-mode network"
    echo "root: ${#PACKAGES[@]} packages (NETBOOT_PACKAGES), $NFILES files, $NBYTES bytes; kernel and initrds from canopy netboot"
    echo "time from QEMU start to systemd's 'Reached target multi-user.target'; median of $RUNS run(s)"
    echo
    printf '%-46s %10s %10s %16s\n' "measurement" "canopy" "ganesha" "canopy/ganesha"
    row() {   # row LABEL KEY FORMAT [DIVISOR]
        local c g
        c=$(m "canopy-$2")
        g=$(m "ganesha-$2")
        if [[ -n ${4:-} ]]; then c=$(per "$c" "$4" 1); g=$(per "$g" "$4" 1); fi
        printf '%-46s %10s %10s %16s\n' "$1" "$(fmt "$c" "$3")" "$(fmt "$g" "$3")" "$(ratio "$c" "$g")"
    }
    row "1 guest: seconds to multi-user" 1-last %.1f
    row "1 guest: MB sent by the server" 1-bytes %.1f 1000000
    row "1 guest: segments received (~requests)" 1-segs %.0f
    row "1 guest: server CPU seconds" 1-cpu %.2f
    if ((GUESTS > 1)); then
        row "$GUESTS guests: seconds to multi-user, first" "$GUESTS-first" %.1f
        row "$GUESTS guests: seconds to multi-user, last" "$GUESTS-last" %.1f
        row "$GUESTS guests: MB sent by the server, all" "$GUESTS-bytes" %.1f 1000000
        row "$GUESTS guests: MB sent per guest" "$GUESTS-bytes" %.1f $((GUESTS * 1000000))
        row "$GUESTS guests: segments received per guest" "$GUESTS-segs" %.0f "$GUESTS"
        row "$GUESTS guests: server CPU seconds per guest" "$GUESTS-cpu" %.2f "$GUESTS"
    fi
    echo
    keys=(1-last 1-bytes 1-cpu)
    if ((GUESTS > 1)); then keys+=("$GUESTS-last" "$GUESTS-bytes" "$GUESTS-cpu"); fi
    for key in "${keys[@]}"; do
        echo "runs $key: canopy${VALS[canopy-$key]:-} | ganesha${VALS[ganesha-$key]:-}"
    done
    echo "load average before: $LOAD_BEFORE, after: $LOAD_AFTER ($(nproc) cores, shared: expect noise)"
    echo "reproduce: benches/netboot.sh --guests $GUESTS --runs $RUNS --mem $MEM"
} | tee "$OUT"
