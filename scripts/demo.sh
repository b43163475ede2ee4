#!/usr/bin/env bash
# canopy's main job on the default store, from nothing: build canopy, fetch a handful of
# real Debian packages, import them, assemble a root from them, and run bash inside it.
#
#   bash scripts/demo.sh
#
# Store: $CANOPY_STORE, or ~/.local/share/canopy. Packages are cached in
# ~/.cache/canopy-demo/debs; the root is checked out to ~/.cache/canopy-demo/web.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(libc6 libtinfo6 bash coreutils libselinux1 libpcre2-8-0 libacl1 libattr1 libgmp10 base-files)
WORK="${CANOPY_DEMO_DIR:-$HOME/.cache/canopy-demo}"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "building canopy (release)"
cargo build --release --quiet
canopy="$PWD/target/release/canopy"

step "fetching ${#PACKAGES[@]} Debian packages into $WORK/debs"
mkdir -p "$WORK/debs"
have_all() { for p in "${PACKAGES[@]}"; do compgen -G "$WORK/debs/${p}_*.deb" >/dev/null || return 1; done; }
if ! have_all; then
    (cd "$WORK/debs" && apt-get download "${PACKAGES[@]}" 2>/dev/null) || {
        echo "apt-get download failed; updating the package lists once and retrying"
        apt-get update -qq
        (cd "$WORK/debs" && apt-get download "${PACKAGES[@]}")
    }
fi

step "canopy init"
"$canopy" init

step "canopy import deb (already imported archives are skipped)"
"$canopy" import deb "$WORK"/debs/*.deb

step "canopy assemble web ${PACKAGES[*]}"
"$canopy" assemble web "${PACKAGES[@]}"
"$canopy" roots list

step "canopy checkout web $WORK/web --hardlink"
if [ -e "$WORK/web" ]; then
    chmod -R u+w "$WORK/web" 2>/dev/null || true
    rm -rf "$WORK/web"
fi
"$canopy" checkout web "$WORK/web" --hardlink

step "running bash from the root"
run=(chroot "$WORK/web" /bin/bash -c 'echo "hello from a canopy root: $(ls /usr/bin | wc -l) programs in /usr/bin, uid $(id -u)"')
if [ "$(id -u)" -ne 0 ]; then
    run=(unshare --map-root-user "${run[@]}")
fi
"${run[@]}"

step "canopy fsck"
"$canopy" fsck
