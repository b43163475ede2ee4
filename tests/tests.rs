// Harness: runs the canopy binary, snapshots stores, compares trees, parses result lines.
mod util;
// The real Debian 12 packages the tests import, fetched once with apt-get download.
mod debs;
// Generators of hostile archives, written byte by byte.
mod corpus;
// RPM packages written byte by byte, good and hostile.
mod rpms;
// The README walk-through end to end, plus conflicts, special files, dirs and specs.
mod walkthrough;
// Every hostile archive is refused with its error class and leaves the store unchanged.
mod hostile;
// Inputs a probe found mishandled: .deb layouts as dpkg, long paths, batches, escaping, Range.
mod input;
// A new user's mistakes: servers without http://, ports alone, paths for URLs, report wording.
mod newuser;
// Signed names on the client: swapped, replayed and foreign roots refused, the others mount.
mod trust;
// A TCP proxy whose copies the tests choose: altering or slowing answers.
mod proxy;
// Bounded waits: a dribbling proxy, killable readers.
mod waits;
// Cache files altered on disk: found out, fetched again, never served.
mod cache;
// Connections under load: idle and slow crowds on HTTP and NFS, a low open-file limit.
mod load;
// A writer killed at any durable step leaves the last good state.
mod crash;
// Many archives in one import: the same packages and counts as one by one.
mod batch;
// Serving over HTTP and mounting with FUSE: shared inodes, cache bound, outages, tampering, follow, nginx.
mod mount;
// Cold fetch: directory packs, a member altered on the way, prefetch under a small cache.
mod cold;
// Access profiles: recorded with a real program, replayed by a fresh host, tampered, bogus, bounded.
mod profile;
// Live hand-over of a mount to a new process: programs from the mount never notice.
mod handover;
// Programs from a mount whose daemon is replaced: bash in a loop, readers hashing files.
mod workload;
// A mount under a service manager's descriptor store: killed or restarted, programs never notice.
mod fdstore;
// Exporting roots over NFSv3: real NFS clients, handles across restarts and upgrades, garbage RPCs.
mod nfs;
// The portmapper on port 111, and registration with an rpcbind already there.
mod portmap;
// Roots resolved from a Debian repository: downloads, upgrade, rollback, diff, corruption.
mod repo;
// Installed roots: package scripts run in a sandbox at assemble time, compared with mmdebstrap.
mod installed;
// Diskless nodes: netboot files, the iPXE endpoint, QEMU guests booted over NFS.
mod netboot;
// QEMU guests for the boot tests: a network namespace, the server in it, a shell per guest.
mod netboot_guest;
// Package scripts that fail, reach for the network or remove /; users, upgrades, kill -9.
mod configure;
// dpkg's ways around scripts: Pre-Depends configured first, diversions, large control archives, links to host identity.
mod maintscripts;
// Inspection without mounting, closed pipes, names in errors, ROOT@COMMIT everywhere, removal, reflog, link farm.
mod lifecycle;
// The Docker volume plugin over its socket, across restarts, and under a real dockerd.
mod volume;
// RPM packages: fixtures built with rpmbuild, import compared with rpm2cpio | cpio, signatures.
mod rpm;
// Installed RPM roots: scriptlets in the sandbox, owners by name, the rpm database.
mod rpm_install;
// OCI layouts written at test time: zstd, plain and opaque-directory layers, flawed images.
mod layout;
// Container images in: umoci and docker save compared with umoci unpack and docker export.
mod image;
// Hostile images: each refused with its error class, the store unchanged.
mod image_hostile;
// canopy run: store, server, directory and mount sources; state; signals; non-root; --spc; labels.
mod run;
// SeaweedFS for the S3 tests: one shared `weed mini`, buckets per test.
mod seaweed;
// The store in a bucket: same roots as local, several writers, gc leases, crashes.
mod s3;
// Stateless servers on one bucket: failover between them, an outage of the bucket.
mod stateless;
// Verified replicas: local and bucket stores served with the upstream's key, tampering, kill -9.
mod replicate;
