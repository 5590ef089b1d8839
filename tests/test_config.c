/*
 * test_config.c - the configuration parser: every error class, units,
 * defaults, digest, examples, and the docs/configuration.md table.
 */
#include <dirent.h>
#include <errno.h>
#include <sys/wait.h>

#include "../config/config.h"
#include "../lib/util.h"
#include "../lib/wire.h"
#include "test.h"

#define BASE "name = vm1\nreplication = 127.0.0.1:7400\n"

static int parse(const char *text, struct tandem_config *cfg, char *err, size_t errlen)
{
	return config_parse("t.cfg", text, strlen(text), cfg, err, errlen);
}

int test_config_units_and_defaults(void)
{
	struct tandem_config cfg;
	char err[1024];

	ASSERT_EQ(parse(BASE "interval = 25ms\ntimeout = 1.5s\nbuffer-limit = 10M\n"
			"staging-limit = 2G # comment\nencrypt = yes\n", &cfg, err, sizeof(err)), 0);
	ASSERT_EQ(cfg.interval_ms, 25);
	ASSERT_EQ(cfg.timeout_ms, 1500);
	ASSERT_EQ(cfg.buffer_limit, 10ull << 20);
	ASSERT_EQ(cfg.staging_limit, 2ull << 30);
	ASSERT(cfg.encrypt);
	ASSERT(!strcmp(cfg.name, "vm1"));
	ASSERT(!strcmp(cfg.replication.host, "127.0.0.1"));
	ASSERT_EQ(cfg.replication.port, 7400);
	/* defaults */
	ASSERT_EQ(cfg.domain, DOMAIN_XEN);
	ASSERT_EQ(cfg.netbuf, NETBUF_PLUG);
	ASSERT_EQ(cfg.epochs_in_flight, 4);
	ASSERT(!strcmp(cfg.key_file, "/etc/tandem/tandem.key"));
	/* IPv6 and quoted strings */
	ASSERT_EQ(parse("name = \"vm-2\"\nreplication = [::1]:9\n", &cfg, err, sizeof(err)), 0);
	ASSERT(!strcmp(cfg.replication.host, "::1"));
	ASSERT(!strcmp(cfg.name, "vm-2"));
	return TEST_OK;
}

struct bad_case {
	const char *text;
	const char *expect;
};

int test_config_error_classes(void)
{
	static const struct bad_case cases[] = {
		{ BASE "intervall = 25ms\n", "t.cfg:3: unknown key 'intervall' (did you mean 'interval'?)" },
		{ BASE "zzzzzzzzzzzz = 1\n", "t.cfg:3: unknown key 'zzzzzzzzzzzz' (see docs/configuration.md)" },
		{ BASE "interval = fast\n", "t.cfg:3: key 'interval': expected a duration such as 25ms or 1s, got 'fast'" },
		{ BASE "interval = 5ms\n", "t.cfg:3: key 'interval': 5ms is out of bounds (10ms to 10s)" },
		{ BASE "interval = 11s\n", "out of bounds (10ms to 10s)" },
		{ BASE "buffer-limit = 2G\n", "t.cfg:3: key 'buffer-limit': 2G is out of bounds (64K to 1G)" },
		{ BASE "buffer-limit = 10Q\n", "key 'buffer-limit': expected a size" },
		{ BASE "epochs-in-flight = 0\n", "key 'epochs-in-flight': 0 is out of bounds (1 to 64)" },
		{ BASE "epochs-in-flight = -3\n", "key 'epochs-in-flight': expected a whole number, got '-3'" },
		{ BASE "encrypt = maybe\n", "t.cfg:3: key 'encrypt': expected yes or no, got 'maybe'" },
		{ BASE "domain = kvm\n", "key 'domain': expected one of xen, memdom, got 'kvm'" },
		{ BASE "interval\n", "t.cfg:3: expected 'key = value', got 'interval'" },
		{ BASE " = 3\n", "t.cfg:3: expected a key before '='" },
		{ BASE "name = vm2\n", "t.cfg:3: key 'name': set twice" },
		{ "name = vm1\n", "t.cfg: key 'replication' is required" },
		{ "replication = h:1\n", "t.cfg: key 'name' is required" },
		{ "name = vm1\nreplication = 127.0.0.1\n", "t.cfg:2: key 'replication': expected an address host:port" },
		{ "name = vm1\nreplication = h:70000\n", "key 'replication': expected an address" },
		{ "name = bad/name\nreplication = h:1\n", "t.cfg:1: key 'name': expected letters" },
		{ BASE "vif = \"unterminated\n", "t.cfg:3: key 'vif': unterminated quoted string" },
		{ BASE "netbuf = none\n", "key 'netbuf': none needs allow-unsafe-no-buffering = yes" },
		{ BASE "timeout = 100ms\nheartbeat-interval = 80ms\n", "must be at most half of timeout" },
		{ BASE "latency-budget = 150ms\n", "key 'latency-budget': 150ms must be at least two "
		  "intervals (200ms)" },
	};
	struct tandem_config cfg;
	char err[2048];

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int rc = parse(cases[i].text, &cfg, err, sizeof(err));
		if (rc != -EINVAL)
			FAILF("case %zu accepted: %s", i, cases[i].text);
		ASSERT_STR_CONTAINS(err, cases[i].expect);
	}
	/* Several errors are all reported, one per line. */
	ASSERT_EQ(parse(BASE "interval = 1ms\ntimeout = x\n", &cfg, err, sizeof(err)), -EINVAL);
	ASSERT_STR_CONTAINS(err, "t.cfg:3:");
	ASSERT_STR_CONTAINS(err, "t.cfg:4:");
	/* the budget: off by default, on at two intervals or more */
	ASSERT_EQ(parse(BASE, &cfg, err, sizeof(err)), 0);
	ASSERT_EQ(cfg.latency_budget_ms, 0);
	ASSERT_EQ(parse(BASE "latency-budget = 200ms\n", &cfg, err, sizeof(err)), 0);
	ASSERT_EQ(cfg.latency_budget_ms, 200);
	/* Unsafe mode needs the explicit override. */
	ASSERT_EQ(parse(BASE "netbuf = none\nallow-unsafe-no-buffering = yes\n", &cfg, err, sizeof(err)), 0);
	return TEST_OK;
}

int test_config_load_errors(void)
{
	struct tandem_config cfg;
	char err[512], path[600];

	snprintf(path, sizeof(path), "%s/missing.cfg", test_tmpdir());
	ASSERT_EQ(config_load(path, &cfg, err, sizeof(err)), -ENOENT);
	ASSERT_STR_CONTAINS(err, "missing.cfg: cannot open: No such file or directory");
	ASSERT(config_load(test_tmpdir(), &cfg, err, sizeof(err)) < 0);
	ASSERT_STR_CONTAINS(err, "not a regular file");
	ASSERT_EQ(config_load(test_write_file("ok.cfg", BASE), &cfg, err, sizeof(err)), 0);
	return TEST_OK;
}

int test_config_digest(void)
{
	struct tandem_config a, b;
	uint8_t da[32], db[32];
	char err[512];

	ASSERT_EQ(parse(BASE "interval = 25ms\n", &a, err, sizeof(err)), 0);
	ASSERT_EQ(parse(BASE "interval = 25ms\nrun-dir = /tmp/x\nlog-level = debug\n", &b, err, sizeof(err)),
		  -EINVAL); /* log-level is a command-line option, not a key */
	ASSERT_EQ(parse(BASE "interval = 25ms\nrun-dir = /tmp/x\n", &b, err, sizeof(err)), 0);
	config_digest(&a, da);
	config_digest(&b, db);
	ASSERT(memcmp(da, db, 32) == 0);	/* run-dir is host-local */
	ASSERT_EQ(parse(BASE "interval = 25ms\nnotify = /usr/local/sbin/page-me\nnotify-timeout = 2s\n",
			&b, err, sizeof(err)), 0);
	config_digest(&b, db);
	ASSERT(memcmp(da, db, 32) == 0);	/* so is the notify hook */
	ASSERT_EQ(parse(BASE "interval = 30ms\n", &b, err, sizeof(err)), 0);
	config_digest(&b, db);
	ASSERT(memcmp(da, db, 32) != 0);
	ASSERT_EQ(parse(BASE "interval = 25ms\nencrypt = yes\n", &b, err, sizeof(err)), 0);
	config_digest(&b, db);
	ASSERT(memcmp(da, db, 32) != 0);
	return TEST_OK;
}

/* The memdom-only keys mean nothing to a xen configuration: check-config
 * does not print them and they do not enter its digest. */
int test_config_xen_skips_memdom_keys(void)
{
	struct tandem_config a, b;
	uint8_t da[32], db[32];
	char err[512], *text = NULL;
	size_t len = 0;
	FILE *f;

	ASSERT_EQ(parse("name = vm1\ndomain = xen\nreplication = 127.0.0.1:7400\n", &a, err,
			sizeof(err)), 0);
	ASSERT_EQ(parse("name = vm1\ndomain = xen\nreplication = 127.0.0.1:7400\nmemory = 256M\n"
			"workload-rate = 5\n", &b, err, sizeof(err)), 0);
	config_digest(&a, da);
	config_digest(&b, db);
	ASSERT(memcmp(da, db, 32) == 0);
	f = open_memstream(&text, &len);
	config_print(&b, f);
	fclose(f);
	ASSERT(!strstr(text, "memory "));
	ASSERT(!strstr(text, "workload-"));
	ASSERT(!strstr(text, "memdom-"));
	ASSERT(!strstr(text, "hotset"));
	ASSERT_STR_CONTAINS(text, "interval ");
	free(text);
	/* for memdom they count */
	ASSERT_EQ(parse("name = vm1\ndomain = memdom\nreplication = 127.0.0.1:7400\n", &a, err,
			sizeof(err)), 0);
	ASSERT_EQ(parse("name = vm1\ndomain = memdom\nreplication = 127.0.0.1:7400\nmemory = 256M\n",
			&b, err, sizeof(err)), 0);
	config_digest(&a, da);
	config_digest(&b, db);
	ASSERT(memcmp(da, db, 32) != 0);
	return TEST_OK;
}

/* check-config's output parses back to the same configuration. */
int test_config_print_round_trip(void)
{
	struct tandem_config a, b;
	char err[512], *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	ASSERT_EQ(parse(BASE "domain = memdom\ninterval = 25ms\nmemory = 256M\nvif = vif1.0\n", &a, err,
			sizeof(err)), 0);
	config_print(&a, f);
	fclose(f);
	ASSERT_EQ(config_parse("t.cfg", text, len, &b, err, sizeof(err)), 0);
	ASSERT(memcmp(&a, &b, sizeof(a)) == 0);
	ASSERT_STR_CONTAINS(text, "interval                   = 25ms");
	free(text);
	return TEST_OK;
}

int test_config_examples_parse(void)
{
	DIR *d = opendir("examples");
	struct dirent *de;
	int n = 0;

	ASSERT(d);
	while ((de = readdir(d))) {
		struct tandem_config cfg;
		char path[512], err[2048];
		size_t l = strlen(de->d_name);

		if (l < 5 || strcmp(de->d_name + l - 4, ".cfg"))
			continue;
		snprintf(path, sizeof(path), "examples/%s", de->d_name);
		if (config_load(path, &cfg, err, sizeof(err)))
			FAILF("%s does not parse: %s", path, err);
		n++;
	}
	closedir(d);
	ASSERT(n >= 2);
	return TEST_OK;
}

/*
 * docs/configuration.md has one table row per key:
 *   | `name` | type | default | bounds | both | help |
 * Every schema key must have a row with the same default, and every row a key.
 */
int test_config_docs_match_schema(void)
{
	FILE *f = fopen("docs/configuration.md", "r");
	const struct config_key *schema;
	bool documented[64] = { false };
	char line[1024];
	size_t n;
	int rows = 0;

	ASSERT(f);
	schema = config_schema(&n);
	ASSERT(n <= 64);
	while (fgets(line, sizeof(line), f)) {
		char key[64], def[128];
		const char *p;
		size_t i;

		if (strncmp(line, "| `", 3) != 0)
			continue;
		if (sscanf(line, "| `%63[^`]` | %*[^|] | %127[^|]|", key, def) != 2)
			FAILF("malformed row: %s", line);
		for (p = def + strlen(def); p > def && p[-1] == ' '; p--)
			;
		def[p - def] = '\0';
		for (i = 0; i < n; i++)
			if (!strcmp(schema[i].name, key))
				break;
		if (i == n)
			FAILF("docs/configuration.md documents '%s', which the schema lacks", key);
		rows++;
		documented[i] = true;
		if (schema[i].def) {
			char want[200];
			snprintf(want, sizeof(want), "`%s`", schema[i].def[0] ? schema[i].def : "\"\"");
			if (strcmp(def, want))
				FAILF("key '%s': docs default %s, schema default %s", key, def, want);
		} else if (strcmp(def, "required")) {
			FAILF("key '%s' is required, docs say default %s", key, def);
		}
	}
	fclose(f);
	for (size_t i = 0; i < n; i++)
		if (!documented[i])
			FAILF("key '%s' is missing from docs/configuration.md", schema[i].name);
	ASSERT_EQ(rows, n);
	return TEST_OK;
}

/* check-config warns, without refusing, when on-peer-loss = failover has
 * the replication link as its only path; a heartbeat path silences it. */
int test_config_single_path_warning(void)
{
	char out[2048];
	const char *one, *two;

	one = test_write_file("one.cfg", "name = vm1\nreplication = 127.0.0.1:7400\n");
	ASSERT_EQ(test_capture(out, sizeof(out), "%s check-config %s 2>&1 >/dev/null",
			       test_tandem_bin(), one), 0);
	ASSERT_STR_CONTAINS(out, "warning: on-peer-loss = failover with the replication link as the only path");
	two = test_write_file("two.cfg", "name = vm1\nreplication = 127.0.0.1:7400\n"
			      "heartbeat-paths = 127.0.0.1:7401-127.0.0.2:7401\n");
	ASSERT_EQ(test_capture(out, sizeof(out), "%s check-config %s 2>&1 >/dev/null",
			       test_tandem_bin(), two), 0);
	ASSERT(!strstr(out, "warning"));
	return TEST_OK;
}

/*
 * include = FILE: one file of defaults shared by many VMs' files (its
 * path relative to the including file); the VM's own keys override it;
 * one include, before every key, never nested; errors name the file.
 */
int test_config_include(void)
{
	struct tandem_config cfg;
	char err[4096], text[1024];
	const char *vm;

	test_write_file("defaults.cfg", "interval = 50ms\ntimeout = 2s\nencrypt = yes\n"
			"heartbeat-interval = 200ms\n");
	snprintf(text, sizeof(text), "include = defaults.cfg\nname = web\n"
		 "replication = 10.0.0.2:7401\nkey-file = %s/k\ntimeout = 3s\n", test_tmpdir());
	vm = test_write_file("web.cfg", text);
	if (config_load(vm, &cfg, err, sizeof(err)))
		FAILF("include: %s", err);
	ASSERT_EQ(cfg.interval_ms, 50);		/* from the defaults */
	ASSERT(cfg.encrypt);
	ASSERT_EQ(cfg.timeout_ms, 3000);		/* the VM's own value wins */
	ASSERT_EQ(cfg.replication.port, 7401);

	snprintf(text, sizeof(text), "name = web\ninclude = defaults.cfg\nreplication = 10.0.0.2:7401\n");
	ASSERT(config_load(test_write_file("late.cfg", text), &cfg, err, sizeof(err)) != 0);
	ASSERT(strstr(err, "late.cfg:2: include: at most one, before every key"));

	ASSERT(config_load(test_write_file("gone.cfg", "include = nowhere.cfg\nname = a\n"
					   "replication = 1.2.3.4:5\n"), &cfg, err, sizeof(err)) != 0);
	ASSERT(strstr(err, "gone.cfg:1: include: ") && strstr(err, "nowhere.cfg: cannot open"));

	test_write_file("nested.cfg", "include = defaults.cfg\n");
	ASSERT(config_load(test_write_file("outer.cfg", "include = nested.cfg\nname = a\n"
					   "replication = 1.2.3.4:5\n"), &cfg, err, sizeof(err)) != 0);
	ASSERT(strstr(err, "nested.cfg:1: include: only a VM's own file"));

	test_write_file("twice.cfg", "interval = 50ms\ninterval = 60ms\n");
	ASSERT(config_load(test_write_file("t.cfg", "include = twice.cfg\nname = a\n"
					   "replication = 1.2.3.4:5\n"), &cfg, err, sizeof(err)) != 0);
	ASSERT(strstr(err, "twice.cfg:2: key 'interval': set twice"));
	/* text given straight to the parser (no file) may not include */
	ASSERT(config_parse("mem", "include = defaults.cfg\n", 22, &cfg, err, sizeof(err)) != 0);
	ASSERT(strstr(err, "include: only a VM's own file"));
	return TEST_OK;
}

/*
 * hosts: one file for both directions.  Each host resolves the role-based
 * view its role needs (the backup's address, each path's ends by role);
 * the digest is the file's, whichever host and role resolved it; the
 * mistakes an operator makes are refused with what to do.
 */
int test_config_hosts(void)
{
	static const char *const text =
		"name = vm1\nhosts = alpha 127.0.0.1:7400, beta 127.0.0.2:7410\n"
		"heartbeat-paths = 127.0.0.1:7401-127.0.0.2:7411\nrun-dir = /tmp/tdm-%h\n";
	struct tandem_config file, a, b;
	uint8_t d0[CONFIG_DIGEST_LEN], d1[CONFIG_DIGEST_LEN];
	char err[1024], out[2048];
	const char *one;

	ASSERT_EQ(parse(text, &file, err, sizeof(err)), 0);
	ASSERT_EQ(file.hosts.n, 2);
	ASSERT(!strcmp(file.hosts.h[1].name, "beta"));
	ASSERT_EQ(file.hosts.h[1].repl.port, 7410);
	config_digest(&file, d0);

	/* alpha primary, beta backup: alpha connects to beta's address */
	a = file;
	ASSERT_EQ(config_resolve(&a, "alpha", ROLE_PRIMARY, err, sizeof(err)), 0);
	ASSERT(!strcmp(a.replication.host, "127.0.0.2") && a.replication.port == 7410);
	ASSERT_EQ(a.heartbeat_paths.p[0].primary.port, 7401);
	ASSERT(!strcmp(a.run_dir, "/tmp/tdm-alpha"));
	b = file;
	ASSERT_EQ(config_resolve(&b, "beta", ROLE_BACKUP, err, sizeof(err)), 0);
	ASSERT(!memcmp(&a.replication, &b.replication, sizeof(a.replication)));
	ASSERT(!memcmp(&a.heartbeat_paths, &b.heartbeat_paths, sizeof(a.heartbeat_paths)));
	config_digest(&b, d1);
	ASSERT(!memcmp(d0, d1, sizeof(d0)));

	/* after a failover beta is primary: the other direction */
	ASSERT_EQ(config_set_role(&b, ROLE_PRIMARY), 0);
	ASSERT(!strcmp(b.replication.host, "127.0.0.1") && b.replication.port == 7400);
	ASSERT_EQ(b.heartbeat_paths.p[0].primary.port, 7411);
	ASSERT_EQ(b.heartbeat_paths.p[0].backup.port, 7401);
	ASSERT(!strcmp(config_peer_host(&b), "alpha"));
	config_digest(&b, d1);
	ASSERT(!memcmp(d0, d1, sizeof(d0)));

	/* both addresses are local here: the host must be named */
	a = file;
	ASSERT_EQ(config_resolve(&a, NULL, ROLE_BACKUP, err, sizeof(err)), -EINVAL);
	ASSERT_STR_CONTAINS(err, "--this-host");
	a = file;
	ASSERT_EQ(config_resolve(&a, "gamma", ROLE_BACKUP, err, sizeof(err)), -EINVAL);
	ASSERT_STR_CONTAINS(err, "none of the hosts");
	/* an old single-direction file keeps working, without --this-host */
	ASSERT_EQ(parse(BASE, &a, err, sizeof(err)), 0);
	ASSERT_EQ(config_resolve(&a, NULL, ROLE_PRIMARY, err, sizeof(err)), 0);
	ASSERT_EQ(a.replication.port, 7400);
	ASSERT_EQ(config_resolve(&a, "alpha", ROLE_PRIMARY, err, sizeof(err)), -EINVAL);
	ASSERT_STR_CONTAINS(err, "needs hosts");

	/* parse errors */
	ASSERT(parse("name = vm1\nhosts = alpha 127.0.0.1:1\n", &a, err, sizeof(err)) < 0);
	ASSERT_STR_CONTAINS(err, "exactly two hosts");
	ASSERT(parse("name = vm1\nhosts = a 127.0.0.1:1, a 127.0.0.2:1\n", &a, err, sizeof(err)) < 0);
	ASSERT_STR_CONTAINS(err, "same name");
	ASSERT(parse("name = vm1\nhosts = a 127.0.0.1:1, b 127.0.0.2:1\nreplication = 127.0.0.1:1\n",
		     &a, err, sizeof(err)) < 0);
	ASSERT_STR_CONTAINS(err, "not with hosts");
	ASSERT(parse(BASE "run-dir = /run/t-%h\n", &a, err, sizeof(err)) < 0);
	ASSERT_STR_CONTAINS(err, "%h (this host's name) needs hosts");

	/* the daemons say the same at start (exit 2) */
	one = test_write_file("hosts.cfg", "name = vm1\ndomain = memdom\n"
			      "hosts = alpha 127.0.0.1:7400, beta 127.0.0.2:7410\n");
	ASSERT_EQ(test_capture(out, sizeof(out), "%s backup %s 2>&1", test_tandem_bin(), one), 2);
	ASSERT_STR_CONTAINS(out, "say which host this is with --this-host NAME");
	/* check-config prints hosts, not replication */
	ASSERT_EQ(test_capture(out, sizeof(out), "%s check-config %s 2>&1", test_tandem_bin(), one), 0);
	ASSERT_STR_CONTAINS(out, "hosts                      = alpha 127.0.0.1:7400, beta 127.0.0.2:7410");
	ASSERT(!strstr(out, "\nreplication  "));
	return TEST_OK;
}
