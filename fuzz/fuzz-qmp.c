/*
 * fuzz-qmp.c - libFuzzer harness for the QMP client's message reader
 * (domain/qmp.c): the input is what a guest's QEMU (or whatever listens on
 * the QMP socket) sends.  Messages are read one after the other as the
 * session does; each answer is checked: spans inside the input, names and
 * descriptions NUL-terminated and printable, a return value's span itself
 * JSON that the member reader can walk.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../domain/qmp.h"
#include "../lib/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_text(const char *s, size_t cap, bool printable)
{
	size_t n = strnlen(s, cap);

	if (n == cap)
		__builtin_trap();	/* not NUL-terminated */
	if (printable)
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
				__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	size_t off = 0;

	log_set_level(LOG_LVL_ERROR);
	for (int n = 0; n < 64 && off < size; n++) {
		struct qmp__msg m;
		size_t used = 0;
		int64_t v;
		int rc = qmp__parse(buf + off, size - off, &used, &m);

		if (rc == -EAGAIN || rc == -EPROTO || rc == -EMSGSIZE)
			break;
		if (rc != 0)
			__builtin_trap();	/* no other outcome */
		if (used == 0 || used > size - off || used > QMP_MSG_MAX)
			__builtin_trap();
		check_text(m.name, sizeof(m.name), m.kind == QMP__ERROR);
		check_text(m.desc, sizeof(m.desc), true);
		switch (m.kind) {
		case QMP__RETURN:
			if (m.ret_len == 0 || m.ret_off + m.ret_len > used)
				__builtin_trap();
			rc = qmp__object_int(buf + off + m.ret_off, m.ret_len, "fdset-id", &v);
			if (rc != 0 && rc != -ENOENT && rc != -EPROTO)
				__builtin_trap();
			break;
		case QMP__GREETING:
			if (m.major < 0 || m.minor < 0 || m.micro < 0)
				__builtin_trap();
			break;
		case QMP__ERROR:
		case QMP__EVENT:
			break;
		default:
			__builtin_trap();
		}
		if (m.id_kind < 0 || m.id_kind > 2)
			__builtin_trap();
		off += used;
	}
	return 0;
}
