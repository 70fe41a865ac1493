/*
 * smartcert audit: verify the hash chain, show records.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sc_audit.h"
#include "sc_checkpoint.h"
#include "sc_cli.h"
#include "sc_err.h"
#include "sc_json.h"
#include "sc_util.h"

static void audit_usage(FILE *f)
{
	fprintf(f,
		"usage: smartcert audit verify [--json]\n"
		"       smartcert audit show [--user ID] [--kind KIND] [--since ISO] [--until ISO]\n"
		"                            [--limit N] [--json]\n"
		"\n"
		"verify recomputes the hash chain and exits 8 naming the first record that\n"
		"was altered, removed or reordered.  Times: YYYY-MM-DDTHH:MM:SSZ or\n"
		"YYYY-MM-DD (--since from its start, --until to its end), both inclusive.\n");
}

/* A bare date as an upper bound means the whole day. */
static int audit_parse_time(const char *s, int end_of_day, int64_t *out)
{
	int32_t d;

	if (sc_time_parse(s, out) == SC_OK)
		return SC_OK;
	if (strlen(s) != 10 || sc_date_parse(s, &d) != SC_OK) {
		sc_error_clear();
		return SC_ERR_INVALID;
	}
	*out = sc_days_from_civil(d / 10000, (unsigned)(d / 100 % 100), (unsigned)(d % 100)) * 86400 +
	       (end_of_day ? 86399 : 0);
	return SC_OK;
}

struct audit_show {
	const char *user, *kind;
	int64_t since, until;
	unsigned long limit, count;
	int json;
	sc_json *j;
};

static int audit_show_cb(void *ctx, const sc_audit_record *r)
{
	struct audit_show *s = ctx;
	const sc_audit_event *e = &r->ev;
	char t[32], h[65];

	if (s->user != NULL && (e->user_id == NULL || strcmp(e->user_id, s->user) != 0))
		return 0;
	if (s->kind != NULL && (e->kind == NULL || strcmp(e->kind, s->kind) != 0))
		return 0;
	if ((s->since && e->time < s->since) || (s->until && e->time > s->until))
		return 0;
	if (s->limit && s->count >= s->limit)
		return 1;
	s->count++;
	if (s->json) {
		sc_hex_encode(r->hash, sizeof(r->hash), h);
		sc_json_obj_begin(s->j);
		sc_json_kv_int(s->j, "seq", (int64_t)r->seq);
		sc_json_kv_time(s->j, "time", e->time);
		sc_json_kv_str(s->j, "kind", e->kind);
		sc_json_kv_str(s->j, "actor", e->actor);
		sc_json_kv_str(s->j, "user", e->user_id);
		sc_json_kv_str(s->j, "key_id", e->key_id);
		sc_json_kv_str(s->j, "serial", e->serial);
		sc_json_kv_str(s->j, "token_id", e->token_id);
		sc_json_kv_str(s->j, "digest", e->digest);
		sc_json_kv_str(s->j, "outcome", e->outcome);
		sc_json_kv_str(s->j, "detail", e->detail);
		sc_json_kv_str(s->j, "hash", h);
		sc_json_obj_end(s->j);
	} else {
		sc_time_format(e->time, t, sizeof(t));
		printf("%6llu %s %-12s %-18s user=%s key=%s serial=%s%s%s outcome=%s%s%s\n",
		       (unsigned long long)r->seq, t, e->kind ? sc_cli_esc(e->kind) : "?",
		       e->actor ? sc_cli_esc(e->actor) : "?", e->user_id ? sc_cli_esc(e->user_id) : "-",
		       e->key_id ? sc_cli_esc(e->key_id) : "-", e->serial ? sc_cli_esc(e->serial) : "-",
		       e->token_id ? " token=" : "", e->token_id ? sc_cli_esc(e->token_id) : "",
		       e->outcome ? e->outcome : "?", e->detail ? " " : "",
		       e->detail ? sc_cli_esc(e->detail) : "");
	}
	return 0;
}

int sc_cmd_audit(int argc, char **argv)
{
	static const struct option opts[] = {
		SC_ARG("user", 'u'), SC_ARG("kind", 'k'), SC_ARG("since", 's'), SC_ARG("until", 'U'),
		SC_ARG("limit", 'l'), SC_FLAG("json", 'j'), SC_FLAG("help", 'h'), SC_OPT_END,
	};
	struct sc_cli_opts o = SC_CLI_OPTS("audit", argc - 1, argv + 1, opts);
	struct audit_show s;
	sc_deploy *d = NULL;
	sc_txn *txn = NULL;
	sc_json j;
	const char *sub;
	int c, ex, rv;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		audit_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? SC_EXIT_USAGE : SC_EXIT_OK;
	}
	sub = argv[1];
	if (strcmp(sub, "verify") != 0 && strcmp(sub, "show") != 0)
		return sc_cli_usage_error("audit", "unknown subcommand '%s'", sub);
	memset(&s, 0, sizeof(s));
	while ((c = sc_cli_getopt(&o)) > 0) {
		switch (c) {
		case 'u': s.user = optarg; break;
		case 'k': s.kind = optarg; break;
		case 's':
			if (audit_parse_time(optarg, 0, &s.since) != SC_OK)
				return sc_cli_usage_error("audit", "--since: bad time '%s'", optarg);
			break;
		case 'U':
			if (audit_parse_time(optarg, 1, &s.until) != SC_OK)
				return sc_cli_usage_error("audit", "--until: bad time '%s'", optarg);
			break;
		case 'l': {
			char *end = NULL;

			s.limit = strtoul(optarg, &end, 10);
			if (end == optarg || *end != '\0')
				return sc_cli_usage_error("audit", "--limit must be a number");
			break;
		}
		case 'h': audit_usage(stdout); return SC_EXIT_OK;
		default: break;
		}
	}
	if (c < 0)
		return SC_EXIT_USAGE;
	s.json = o.json;
	/* verify recomputes the keyed chain: the audit key is in the HSM. */
	if ((ex = sc_cli_open(NULL, strcmp(sub, "verify") == 0 ? SC_DEPLOY_NO_CHECKPOINT
							  : SC_DEPLOY_NO_HSM,
			      &d)) != SC_EXIT_OK)
		return ex;
	sc_json_init(&j);
	if ((rv = sc_txn_begin(d->store, SC_TXN_READ, &txn)) != SC_OK) {
		ex = sc_cli_fail(rv, "audit");
		goto out;
	}
	if (strcmp(sub, "verify") == 0) {
		uint64_t count = 0, bad = 0;
		int cp;

		rv = sc_audit_verify(txn, &count, &bad);
		/* The chain, then the store against the newest checkpoint
		 * outside it (a chain cut short with its head rewritten is
		 * intact by itself). */
		if (rv == SC_OK && (cp = sc_checkpoint_check(d->cfg, d->store, d->hsm)) != SC_OK) {
			rv = cp;
			bad = count + 1;
		}
		if (s.json) {
			sc_json_obj_begin(&j);
			sc_json_kv_bool(&j, "ok", rv == SC_OK);
			sc_json_kv_int(&j, "records", (int64_t)count);
			if (rv != SC_OK) {
				sc_json_kv_int(&j, "first_bad", (int64_t)bad);
				sc_json_kv_str(&j, "error", sc_errname(rv));
				sc_json_kv_str(&j, "detail", sc_error_detail());
			}
			sc_json_obj_end(&j);
			sc_json_print(&j, stdout);
		}
		if (rv == SC_OK) {
			if (!s.json)
				printf("audit chain intact: %llu records\n", (unsigned long long)count);
			ex = SC_EXIT_OK;
		} else if (rv == SC_ERR_INTEGRITY) {
			fprintf(stderr, "smartcert: audit verify: chain broken at record %llu: %s\n",
				(unsigned long long)bad, sc_error_detail());
			sc_error_clear();
			ex = SC_EXIT_INTEGRITY;
		} else {
			ex = sc_cli_fail(rv, "audit verify");
		}
		goto out;
	}
	s.j = &j;
	if (s.json)
		sc_json_arr_begin(&j);
	rv = sc_audit_iter(txn, 1, audit_show_cb, &s);
	if (rv != SC_OK) {
		ex = sc_cli_fail(rv, "audit show");
		goto out;
	}
	if (s.json) {
		sc_json_arr_end(&j);
		sc_json_print(&j, stdout);
	}
	ex = SC_EXIT_OK;
out:
	sc_txn_abort(txn);
	sc_json_free(&j);
	sc_deploy_close(d);
	return ex;
}
