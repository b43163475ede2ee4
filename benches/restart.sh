#!/bin/bash
# benches/restart.sh — what keeping a mount in a service manager's descriptor store
# costs, and how long a crash stalls it. Mounts one root (bash and its libraries from
# real .debs, plus a 256 MiB random file) with `canopy mount` plain and under
# tests/fd_store.py (the stand-in for systemd: Type=notify, FileDescriptorStoreMax=,
# Restart=always), with and without FUSE passthrough, and measures side by side:
#   - reads of the big file with its pages dropped after each piece (through canopy
#     with --no-passthrough), MiB/s, median of 3 passes;
#   - an open/read/close loop on a small file (each open and close is a request; under
#     the store each also updates the shared table of I/O modes), opens/s and latency;
#   - kill -9 of the daemon under the stand-in during such a loop: how long after the
#     kill the first open started after it is answered, and the longest gap.
# Run as root on an idle machine: CANOPY=target/release/canopy bash benches/restart.sh
# (DEBS=dir of .debs, default the tests' cache; ROUNDS=3). Prints one line per figure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CANOPY=$(realpath "${CANOPY:-$ROOT/target/release/canopy}")
DEBS=${DEBS:-${CANOPY_TEST_DEBS:-/work/cache/test-debs}}
ROUNDS=${ROUNDS:-3}
[[ -x $CANOPY ]] || { echo "build canopy first: cargo build --release" >&2; exit 1; }
W=$(mktemp -d /tmp/canopy-restart-bench-XXXXXX)
export CANOPY_STORE=$W/store
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    grep -q " $W/mnt " /proc/self/mountinfo && umount -l "$W/mnt"
    rm -rf "$W"
}
trap cleanup EXIT
cd "$W"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
$CANOPY init >/dev/null
debs=()
for p in base-files bash libc6 libtinfo6 gcc-12-base libgcc-s1; do
    debs+=("$(ls "$DEBS"/"${p}"_*.deb | head -1)")
done
$CANOPY import deb "${debs[@]}" >/dev/null
mkdir -p big/data && head -c $((256 << 20)) /dev/urandom > big/data/big
$CANOPY import dir big --name big --version 1 >/dev/null
$CANOPY assemble ho --no-configure base-files bash libc6 libtinfo6 gcc-12-base libgcc-s1 big >/dev/null 2>&1
$CANOPY key show > server.pub
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
$CANOPY serve --listen 127.0.0.1:$PORT > serve.log 2>&1 & PIDS+=($!)
sleep 1
mkdir -p mnt
cat > reads.py <<'PY'
import os, sys, time
path, passes, rates = sys.argv[1], int(sys.argv[2]), []
for _ in range(passes):
    fd = os.open(path, os.O_RDONLY); off = 0; t = time.monotonic()
    while b := os.pread(fd, 131072, off):
        os.posix_fadvise(fd, off, len(b), os.POSIX_FADV_DONTNEED); off += len(b)
    rates.append(off / (time.monotonic() - t) / 2**20); os.close(fd)
print("reads %s MiB/s, median %.0f" % (" ".join("%.0f" % r for r in rates), sorted(rates)[len(rates) // 2]))
PY
cat > opens.py <<'PY'
import os, sys, time, threading, signal
path, seconds, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
ops, stop = [], False
def loop():
    while not stop:
        t = time.monotonic(); fd = os.open(path, os.O_RDONLY); os.read(fd, 100); os.close(fd)
        ops.append((t, time.monotonic()))
th = threading.Thread(target=loop); th.start()
if pid:
    time.sleep(1); k = time.monotonic(); os.kill(pid, signal.SIGKILL)
time.sleep(seconds); stop = True; th.join()
lat = sorted(e - s for s, e in ops)
if pid:
    after = [e - k for s, e in ops if s > k]
    gap = max(b[1] - a[1] for a, b in zip(ops, ops[1:]))
    print("kill -9: first request after it answered in %.1f ms, longest gap between answers %.1f ms" % (min(after) * 1e3, gap * 1e3))
else:
    print("opens %.0f/s, median %.1f us, p99 %.1f us" % (len(ops) / seconds, lat[len(lat) // 2] * 1e6, lat[int(len(lat) * .99)] * 1e6))
PY
mounted() { grep -q " $W/mnt " /proc/self/mountinfo; }
start() { # plain|store [options]
    local how=$1; shift
    local args=(mount "http://127.0.0.1:$PORT" "$W/mnt" --trust server.pub --cache-dir "$W/cache" --root ho "$@")
    rm -f sup.out
    if [[ $how == plain ]]; then
        $CANOPY "${args[@]}" > mount.log 2>&1 & DAEMON=$!
        until mounted; do sleep 0.1; done
    else
        python3 "$ROOT/tests/fd_store.py" "$W/notify.sock" "$W/sup" "$CANOPY" "${args[@]}" > sup.out & DAEMON=$!
        until grep -qs ready sup.out; do sleep 0.1; done
    fi
    PIDS+=("$DAEMON")
}
stop() {
    kill "$DAEMON"; wait "$DAEMON" || true
    if mounted; then umount -l "$W/mnt"; fi
}
for round in $(seq "$ROUNDS"); do
    for opts in passthrough --no-passthrough; do
        for how in plain store; do
            start $how $([[ $opts == passthrough ]] || echo "$opts")
            cat mnt/data/big > /dev/null
            echo "round $round $how $opts: $(python3 reads.py mnt/data/big 3); $(python3 opens.py mnt/etc/debian_version 5 0)"
            stop
        done
    done
done
for opts in passthrough --no-passthrough; do
    for round in $(seq "$ROUNDS"); do
        start store $([[ $opts == passthrough ]] || echo "$opts")
        echo "round $round store $opts: $(python3 opens.py mnt/etc/debian_version 2 "$(sed -n 's/^ready //p' sup.out | tail -1)")"
        stop
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
