/*
 * fuzz-config.c - libFuzzer harness for the configuration parser.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../config/config.h"
#include "../lib/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tandem_config cfg;
	char err[2048];

	if (config_parse("fuzz.cfg", (const char *)data, size, &cfg, err, sizeof(err)) == 0) {
		uint8_t d[CONFIG_DIGEST_LEN];
		FILE *f = fopen("/dev/null", "w");
		config_digest(&cfg, d);
		if (f) {
			config_print(&cfg, f);
			fclose(f);
		}
		/* a two-host file: resolve as each host, in both roles */
		for (unsigned i = 0; i < cfg.hosts.n; i++) {
			struct tandem_config r = cfg;

			if (config_resolve(&r, cfg.hosts.h[i].name, ROLE_BACKUP, err, sizeof(err)) == 0) {
				config_set_role(&r, ROLE_PRIMARY);
				config_digest(&r, d);
			}
		}
	}
	return 0;
}
