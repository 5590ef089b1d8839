/*
 * fuzz-handshake.c - libFuzzer harness for the backup's side of the
 * handshake: the input is everything the (hostile) peer sends.
 */
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../lib/channel.h"
#include "../lib/log.h"
#include "../lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct channel_params p;
	struct channel *c = NULL;
	int sv[2];
	char err[256];
	uint8_t sink[4096];

	if (size > 60000)
		return 0;
	log_set_level(LOG_LVL_ERROR);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		return 0;
	{
		int big = 1 << 20;
		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
		setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	}
	memset(&p, 0, sizeof(p));
	p.role = ROLE_BACKUP;
	p.vm = "vm1";
	memset(p.digest, 0x11, sizeof(p.digest));
	memset(p.key, 1, sizeof(p.key));
	if (write_full(sv[0], data, size) == 0) {
		shutdown(sv[0], SHUT_WR);
		if (channel_handshake(sv[1], &p, &c, err, sizeof(err)) == 0) {
			/* Only possible with the key: the fuzzer cannot forge a proof. */
			__builtin_trap();
		}
	}
	while (recv(sv[0], sink, sizeof(sink), MSG_DONTWAIT) > 0)
		;
	channel_free(c);
	close(sv[0]);
	close(sv[1]);
	return 0;
}
