# canopy: the root over NFS, read-only, under a writable layer in memory, with host
# identity of this node's own. An initramfs-tools boot script, chosen by `boot=canopy`
# on the kernel command line; written by canopy netboot.
#
# init has sourced /scripts/nfs before this file, so the root is mounted as `boot=nfs`
# mounts it (nfsroot=, ip=); then it moves to /run/canopy/ro and an overlay with its
# upper layer on a tmpfs (/run/canopy/rw) takes its place. /run goes with the node
# into the real system, so both stay visible there. Nothing of a node's writes reaches
# the server, and every boot starts from the root as it is on the server.

canopy_fail()
{
	panic "canopy: $*"
}

# Runs "$2" in the new root when its program "$1" is there (as root, with /proc and
# /dev mounted for it), the way each host makes its own keys.
canopy_in_root()
{
	chroot "${rootmnt}" /bin/sh -c "command -v $1 >/dev/null 2>&1 || exit 0; $2" \
		>/dev/null 2>&1 || log_warning_msg "canopy: '$2' failed"
}

canopy_machine_id()
{
	# A new random id, 32 hex digits, as systemd-machine-id-setup writes it.
	canopy_uuid=$(cat /proc/sys/kernel/random/uuid)
	canopy_ifs=$IFS
	IFS=-
	# shellcheck disable=SC2086
	set -- ${canopy_uuid}
	IFS=$canopy_ifs
	echo "$1$2$3$4$5" >"${rootmnt}/etc/machine-id"
}

canopy_identity()
{
	mount -n -t proc proc "${rootmnt}/proc" || canopy_fail "cannot mount /proc in the root"
	mount -n -t devtmpfs devtmpfs "${rootmnt}/dev" || canopy_fail "cannot mount /dev in the root"
	canopy_host_identity
	umount "${rootmnt}/dev"
	umount "${rootmnt}/proc"
}

mountroot()
{
	nfs_mount_root
	mkdir -p /run/canopy/ro /run/canopy/rw
	mount -n -o move "${rootmnt}" /run/canopy/ro || canopy_fail "cannot move the NFS root"
	mount -n -t tmpfs -o mode=0755 canopy-rw /run/canopy/rw \
		|| canopy_fail "cannot mount a tmpfs for the writable layer"
	mkdir -p /run/canopy/rw/upper /run/canopy/rw/work
	case "$(cat /proc/filesystems)" in
	*overlay*) ;;
	*)
		# Not in the initramfs: the root has the module of the running kernel.
		modprobe overlay 2>/dev/null || modprobe -d /run/canopy/ro overlay \
			|| canopy_fail "no overlay filesystem (CONFIG_OVERLAY_FS) in this kernel or its root"
		;;
	esac
	# index=off: copying one name of a multiply-linked file up breaks the link rather
	# than carrying the write to its other names (identical files are one inode); a
	# kernel older than 4.13 has no index and no such option.
	canopy_layers=lowerdir=/run/canopy/ro,upperdir=/run/canopy/rw/upper,workdir=/run/canopy/rw/work
	mount -n -t overlay -o "${canopy_layers},index=off" canopy "${rootmnt}" 2>/dev/null \
		|| mount -n -t overlay -o "${canopy_layers}" canopy "${rootmnt}" \
		|| canopy_fail "cannot mount the writable layer over the root"
	canopy_identity
}
