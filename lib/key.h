/*
 * key.h - the shared key both peers hold (`tandem keygen`).
 *
 * File format: 64 hexadecimal characters (32 random bytes) and a newline.
 * A key file readable or writable by group or others is refused.
 */
#ifndef TANDEM_KEY_H
#define TANDEM_KEY_H

#include <stddef.h>
#include <stdint.h>

#define KEY_LEN 32

/* Create a new key file (mode 0600, never overwriting).  Returns 0 or -errno. */
int key_generate(const char *path, char *err, size_t errlen);

/* Load and check a key file.  Returns 0, -EPERM (mode), -EINVAL (format) or -errno. */
int key_load(const char *path, uint8_t key[KEY_LEN], char *err, size_t errlen);

#endif
