/*
 * benches/nfs-read.c — reads a whole export with libnfs, as one NFSv3 client would:
 * one mount, every directory listed (READDIRPLUS), every regular file read to its end.
 * Used by benches/nfs.sh against canopy and nfs-ganesha.
 *
 *   cc -O2 -o nfs-read benches/nfs-read.c -lnfs
 *   nfs-read 'nfs://127.0.0.1/web?version=3&nfsport=2049&mountport=2049'
 *
 * Prints "dirs D files F bytes B digest X": X sums a hash of every file's path and
 * content, so two servers of the same tree print the same line whatever order they
 * list directories in.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw-nfs.h>

static struct nfs_context *nfs;
static uint64_t dirs, files, bytes, digest;
static char buf[1 << 20];

/* FNV-1a, 64 bits: a cheap hash, enough to tell two transfers apart. */
static uint64_t fnv(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

static void die(const char *what, const char *path)
{
	fprintf(stderr, "nfs-read: %s %s: %s\n", what, path, nfs_get_error(nfs));
	exit(1);
}

static void read_file(const char *path)
{
	struct nfsfh *fh;
	uint64_t h = fnv(0xcbf29ce484222325ULL, path, strlen(path));
	if (nfs_open(nfs, path, O_RDONLY, &fh) != 0)
		die("open", path);
	for (;;) {
		int n = nfs_read(nfs, fh, sizeof buf, buf);
		if (n < 0)
			die("read", path);
		if (n == 0)
			break;
		h = fnv(h, buf, n);
		bytes += n;
	}
	nfs_close(nfs, fh);
	files++;
	digest += h;
}

static void walk(const char *path)
{
	struct nfsdir *dir;
	struct nfsdirent *e;
	if (nfs_opendir(nfs, path, &dir) != 0)
		die("opendir", path);
	dirs++;
	while ((e = nfs_readdir(nfs, dir)) != NULL) {
		char child[4096];
		if (!strcmp(e->name, ".") || !strcmp(e->name, ".."))
			continue;
		snprintf(child, sizeof child, "%s/%s", strcmp(path, "/") ? path : "", e->name);
		if (e->type == NF3DIR)
			walk(child);
		else if (e->type == NF3REG)
			read_file(child);
	}
	nfs_closedir(nfs, dir);
}

int main(int argc, char **argv)
{
	struct nfs_url *url;
	if (argc != 2) {
		fprintf(stderr, "usage: nfs-read nfs://SERVER/EXPORT?version=3&nfsport=P&mountport=P\n");
		return 2;
	}
	nfs = nfs_init_context();
	if (nfs == NULL) {
		fprintf(stderr, "nfs-read: no NFS context\n");
		return 1;
	}
	url = nfs_parse_url_dir(nfs, argv[1]);
	if (url == NULL)
		die("parsing", argv[1]);
	if (nfs_mount(nfs, url->server, url->path) != 0)
		die("mounting", argv[1]);
	walk("/");
	printf("dirs %" PRIu64 " files %" PRIu64 " bytes %" PRIu64 " digest %016" PRIx64 "\n",
	       dirs, files, bytes, digest);
	nfs_destroy_url(url);
	nfs_destroy_context(nfs);
	return 0;
}
