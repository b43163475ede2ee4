#!/usr/bin/env bash
# canopy's main job on the default store, from nothing: build canopy, add Debian's
# archive (bookworm, bookworm-updates, bookworm-security) as repositories (their Release
# signatures checked with Debian's keyring), assemble an installed root (Debian's
# Essential set + bash + coreutils, dependencies resolved and downloaded, maintainer
# scripts run in a sandbox), run bash inside a checkout of it and with `canopy run`,
# then serve the store over HTTP, mount it with FUSE like a host would, and run bash
# from the mount.
#
#   bash scripts/demo.sh
#
# Store: $CANOPY_STORE, or ~/.local/share/canopy. The root is checked out to
# ~/.cache/canopy-demo/web and mounted at ~/.cache/canopy-demo/mnt (the mount needs root,
# or fuse3's fusermount3). MIRROR and SECURITY_MIRROR override the Debian mirrors.
set -euo pipefail
cd "$(dirname "$0")/.."

MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
PACKAGES=(bash coreutils)
WORK="${CANOPY_DEMO_DIR:-$HOME/.cache/canopy-demo}"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "building canopy (release)"
cargo build --release --quiet
canopy="$PWD/target/release/canopy"
mkdir -p "$WORK"

step "canopy init"
"$canopy" init

# Debian 12 as apt sees it: the release, its updates and its security fixes. (grep reads
# the whole list: `grep -q` would close the pipe early, and pipefail would count
# canopy's SIGPIPE as a missing repository.)
if ! "$canopy" repo list | grep '^debian ' >/dev/null; then
    step "canopy repo add debian $MIRROR --suite bookworm,bookworm-updates (signature checked with $KEYRING)"
    "$canopy" repo add debian "$MIRROR" --suite bookworm,bookworm-updates --components main \
        --arch amd64 --keyring "$KEYRING"
fi
if ! "$canopy" repo list | grep '^debian-security ' >/dev/null; then
    step "canopy repo add debian-security $SECURITY_MIRROR --suite bookworm-security"
    "$canopy" repo add debian-security "$SECURITY_MIRROR" --suite bookworm-security \
        --components main --arch amd64 --keyring "$KEYRING"
fi

# Package scripts run in a user namespace: as root, or as a user with a subordinate id
# range in /etc/subuid; without one the root is left unconfigured (unpacked).
CONFIGURE=()
if [ "$(id -u)" -ne 0 ] && ! grep -q "^$(id -un):" /etc/subuid 2>/dev/null; then
    CONFIGURE=(--no-configure)
fi
step "canopy assemble web --from debian,debian-security --essential ${PACKAGES[*]} (dependencies resolved; only missing archives downloaded; package scripts run in a sandbox)"
"$canopy" assemble web --from debian,debian-security --essential "${CONFIGURE[@]}" "${PACKAGES[@]}"
"$canopy" roots list

step "canopy upgrade web --dry-run, then canopy upgrade web (nothing new: no commit)"
"$canopy" upgrade web --dry-run || [ $? -eq 10 ]
"$canopy" upgrade web
"$canopy" roots show web

step "canopy checkout web $WORK/web --hardlink"
if [ -e "$WORK/web" ]; then
    chmod -R u+w "$WORK/web" 2>/dev/null || true
    rm -rf "$WORK/web"
fi
"$canopy" checkout web "$WORK/web" --hardlink

step "running bash from the root"
run=(chroot "$WORK/web" /bin/bash -c 'echo "hello from a canopy root: $(ls /usr/bin | wc -l) programs in /usr/bin, uid $(id -u), $(dpkg -l | grep -c "^ii") packages installed, awk is $(readlink -f /usr/bin/awk)"')
if [ "$(id -u)" -ne 0 ]; then
    run=(unshare --map-root-user "${run[@]}")
fi
"${run[@]}"

# canopy run: /proc, /dev, a writable /etc and /var over the read-only root; from the
# store through a FUSE view (root), or from the checkout (any user).
source=web
[ "$(id -u)" -eq 0 ] || source="$WORK/web"
step "canopy run $source -- /bin/bash -c ..."
"$canopy" run "$source" -- /bin/bash -c 'echo "hello from canopy run: pid $$, uid $(id -u), $(getent passwd | wc -l) users, /tmp writable: $(touch /tmp/x && echo yes)"'

step "canopy fsck"
"$canopy" fsck

step "canopy serve (on a free port of 127.0.0.1)"
mkdir -p "$WORK/mnt"
mountpoint -q "$WORK/mnt" && umount "$WORK/mnt"
"$canopy" key show > "$WORK/server.pub"
"$canopy" serve --listen 127.0.0.1:0 > "$WORK/serve.out" &
server=$!
mounted=
cleanup() {
    [ -n "$mounted" ] && kill "$mounted" 2>/dev/null && wait "$mounted" 2>/dev/null
    kill "$server" 2>/dev/null
}
trap cleanup EXIT
# Waits for a line from a background canopy, and stops if that process ended instead
# (a taken port, no FUSE): its error is above, and waiting on would never end.
wait_for() { # PATTERN FILE PID WHAT
    until grep -q "$1" "$2"; do
        if ! kill -0 "$3" 2>/dev/null && ! grep -q "$1" "$2"; then
            echo "demo: $4 stopped before it was ready (its error is above)" >&2
            exit 1
        fi
        sleep 0.1
    done
}
wait_for "on http://" "$WORK/serve.out" "$server" "canopy serve"
url=$(sed -n 's/.* on \(http:.*\)$/\1/p' "$WORK/serve.out")
echo "serving on $url"

step "canopy mount $url $WORK/mnt --trust server.pub"
"$canopy" mount "$url" "$WORK/mnt" --trust "$WORK/server.pub" --cache-dir "$WORK/cache" > "$WORK/mount.out" &
mounted=$!
wait_for "mounted at" "$WORK/mount.out" "$mounted" "canopy mount"
ls "$WORK/mnt"

step "running bash from the mount"
chroot "$WORK/mnt/web" /bin/bash -c 'echo "hello from a mounted canopy root: $(ls /usr/bin | wc -l) programs in /usr/bin"'
