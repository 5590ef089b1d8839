/*
 * key.c - generate and load the shared key.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "key.h"
#include "util.h"

int key_generate(const char *path, char *err, size_t errlen)
{
	uint8_t key[KEY_LEN];
	char hex[2 * KEY_LEN + 2];
	int fd, rc;

	if (RAND_bytes(key, sizeof(key)) != 1) {
		snprintf(err, errlen, "cannot get random bytes for the key");
		return -EIO;
	}
	hex_encode(key, sizeof(key), hex);
	OPENSSL_cleanse(key, sizeof(key));
	strcat(hex, "\n");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: cannot create: %s%s", path, strerror(errno),
			 errno == EEXIST ? " (refusing to overwrite an existing key)" : "");
		return rc;
	}
	rc = write_full(fd, hex, strlen(hex));
	OPENSSL_cleanse(hex, sizeof(hex));
	if (!rc && fsync(fd) < 0)
		rc = -errno;
	close(fd);
	if (rc) {
		snprintf(err, errlen, "%s: write failed: %s", path, strerror(-rc));
		unlink(path);
	}
	return rc;
}

int key_load(const char *path, uint8_t key[KEY_LEN], char *err, size_t errlen)
{
	char buf[2 * KEY_LEN + 8];
	struct stat st;
	ssize_t n;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "key file %s: cannot open: %s (create one with `tandem keygen %s`)",
			 path, strerror(errno), path);
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "key file %s: not a regular file", path);
		rc = -EINVAL;
		goto out;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen, "key file %s: mode %04o lets group or others access it; "
			 "run `chmod 600 %s`", path, (unsigned)(st.st_mode & 07777), path);
		rc = -EPERM;
		goto out;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0) {
		rc = -errno;
		snprintf(err, errlen, "key file %s: read failed: %s", path, strerror(errno));
		goto out;
	}
	buf[n] = '\0';
	if (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	if (n != 2 * KEY_LEN || hex_decode(buf, key, KEY_LEN) != KEY_LEN) {
		snprintf(err, errlen, "key file %s: expected 64 hexadecimal characters "
			 "(made by `tandem keygen`)", path);
		rc = -EINVAL;
	}
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	return rc;
}
