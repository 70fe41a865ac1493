/*
 * INI-style deployment configuration.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sc_config.h"
#include "sc_err.h"
#include "sc_util.h"

#define SC_CONFIG_MAX_SIZE (1024 * 1024)

struct sc_config_key {
	char *name;                 /* "section.key" */
	const char **values;        /* NULL-terminated, file order */
	size_t n, cap;
};

struct sc_config {
	char *file;
	char *dir;
	unsigned char *text;        /* file contents, parsed in place */
	struct sc_config_key *keys;
	size_t nkeys, capkeys;
};

const char *sc_config_locate(const char *explicit_path)
{
	const char *env;

	if (explicit_path != NULL && *explicit_path != '\0')
		return explicit_path;
	env = getenv("SMARTCERT_CONF");
	if (env != NULL && *env != '\0')
		return env;
	return NULL;
}

void sc_config_free(sc_config *cfg)
{
	size_t i;

	if (cfg == NULL)
		return;
	for (i = 0; i < cfg->nkeys; i++) {
		free(cfg->keys[i].name);
		free(cfg->keys[i].values);
	}
	free(cfg->keys);
	free(cfg->text);
	free(cfg->file);
	free(cfg->dir);
	free(cfg);
}

static struct sc_config_key *config_find(const sc_config *cfg, const char *name)
{
	size_t i;

	if (cfg == NULL || name == NULL)
		return NULL;
	for (i = 0; i < cfg->nkeys; i++)
		if (strcmp(cfg->keys[i].name, name) == 0)
			return &cfg->keys[i];
	return NULL;
}

static int config_add(sc_config *cfg, const char *section, const char *key, const char *value)
{
	struct sc_config_key *k;
	size_t nlen = strlen(section) + 1 + strlen(key) + 1;
	char *name;

	name = malloc(nlen);
	if (name == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory reading configuration");
	snprintf(name, nlen, "%s.%s", section, key);
	k = config_find(cfg, name);
	if (k == NULL) {
		if (cfg->nkeys == cfg->capkeys) {
			size_t nc = cfg->capkeys ? cfg->capkeys * 2 : 32;
			struct sc_config_key *nk = realloc(cfg->keys, nc * sizeof(*nk));

			if (nk == NULL) {
				free(name);
				return sc_error_set(SC_ERR_NOMEM, "out of memory reading configuration");
			}
			cfg->keys = nk;
			cfg->capkeys = nc;
		}
		k = &cfg->keys[cfg->nkeys++];
		memset(k, 0, sizeof(*k));
		k->name = name;
	} else {
		free(name);
	}
	if (k->n + 1 >= k->cap) {
		size_t nc = k->cap ? k->cap * 2 : 4;
		const char **nv = realloc(k->values, nc * sizeof(*nv));

		if (nv == NULL)
			return sc_error_set(SC_ERR_NOMEM, "out of memory reading configuration");
		k->values = nv;
		k->cap = nc;
	}
	k->values[k->n++] = value;
	k->values[k->n] = NULL;
	return SC_OK;
}

static int config_namechar(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-' || c == '.';
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

static int config_parse_lines(sc_config *cfg, size_t textlen)
{
	char *p = (char *)cfg->text, *end = p + textlen;
	const char *section = NULL;
	unsigned line = 0;

	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p)), *s, *eq, *key, *val;

		line++;
		if (nl != NULL)
			*nl = '\0';
		if (strlen(p) != (size_t)((nl != NULL ? nl : end) - p))
			return sc_error_set(SC_ERR_CONFIG, "%s:%u: NUL byte in configuration",
					    cfg->file, line);
		s = trim(p);
		p = nl != NULL ? nl + 1 : end;
		if (line == 1 && (unsigned char)s[0] == 0xef && (unsigned char)s[1] == 0xbb &&
		    (unsigned char)s[2] == 0xbf)
			s = trim(s + 3);   /* UTF-8 byte order mark */
		if (*s == '\0' || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *close = strchr(s, ']'), *q;

			if (close == NULL || trim(close + 1)[0] != '\0')
				return sc_error_set(SC_ERR_CONFIG,
						    "%s:%u: malformed section header: write [name]",
						    cfg->file, line);
			*close = '\0';
			s = trim(s + 1);
			if (*s == '\0')
				return sc_error_set(SC_ERR_CONFIG, "%s:%u: empty section name",
						    cfg->file, line);
			for (q = s; *q != '\0'; q++)
				if (!config_namechar((unsigned char)*q))
					return sc_error_set(SC_ERR_CONFIG,
							    "%s:%u: invalid character in section name '%s'",
							    cfg->file, line, s);
			section = s;
			continue;
		}
		eq = strchr(s, '=');
		if (eq == NULL)
			return sc_error_set(SC_ERR_CONFIG,
					    "%s:%u: expected 'key = value', '[section]' or a # comment",
					    cfg->file, line);
		*eq = '\0';
		key = trim(s);
		val = trim(eq + 1);
		if (*key == '\0')
			return sc_error_set(SC_ERR_CONFIG, "%s:%u: missing key before '='", cfg->file,
					    line);
		for (s = key; *s != '\0'; s++)
			if (!config_namechar((unsigned char)*s))
				return sc_error_set(SC_ERR_CONFIG, "%s:%u: invalid character in key '%s'",
						    cfg->file, line, key);
		if (section == NULL)
			return sc_error_set(SC_ERR_CONFIG,
					    "%s:%u: key '%s' appears before any [section] header",
					    cfg->file, line, key);
		/* optional double quotes keep leading/trailing blanks */
		if (val[0] == '"') {
			size_t vl = strlen(val);

			if (vl < 2 || val[vl - 1] != '"')
				return sc_error_set(SC_ERR_CONFIG, "%s:%u: unterminated quoted value",
						    cfg->file, line);
			val[vl - 1] = '\0';
			val++;
		}
		if (config_add(cfg, section, key, val) != SC_OK)
			return SC_ERR_NOMEM;
	}
	return SC_OK;
}

/* The one way a configuration is built, from a file or from memory.  Takes
 * `file` (the name used in messages; its directory anchors relative paths)
 * and `text` (NUL-terminated at text[len]) whatever happens. */
static int config_from_text(char *file, unsigned char *text, size_t len, sc_config **out)
{
	sc_config *cfg;
	char *slash;
	int rv;

	cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL) {
		free(file);
		free(text);
		return sc_error_set(SC_ERR_NOMEM, "out of memory reading configuration");
	}
	cfg->file = file;
	cfg->text = text;
	/* a name without a directory part lives in "." */
	cfg->dir = strdup(strchr(file, '/') != NULL ? file : ".");
	if (cfg->dir == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory reading configuration");
		goto out;
	}
	slash = strrchr(cfg->dir, '/');
	if (slash == cfg->dir)
		slash[1] = '\0';
	else if (slash != NULL)
		*slash = '\0';
	rv = config_parse_lines(cfg, len);
	if (rv != SC_OK)
		goto out;
	*out = cfg;
	cfg = NULL;
out:
	sc_config_free(cfg);
	return rv;
}

int sc_config_load(const char *path, sc_config **out)
{
	unsigned char *text = NULL;
	char *file;
	size_t len = 0;
	int rv;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for configuration");
	*out = NULL;
	if (path == NULL || *path == '\0')
		return sc_error_set(SC_ERR_CONFIG,
				    "no configuration file: pass --config FILE or set SMARTCERT_CONF");
	file = realpath(path, NULL);
	if (file == NULL)
		return sc_error_set(SC_ERR_IO, "cannot read configuration %s: %s", path,
				    strerror(errno));
	rv = sc_file_read(file, SC_CONFIG_MAX_SIZE, &text, &len);
	if (rv != SC_OK) {
		free(file);
		if (rv != SC_ERR_NOMEM)
			rv = sc_error_set(rv == SC_ERR_INVALID ? SC_ERR_CONFIG : SC_ERR_IO,
					  "cannot read configuration %s: %s", path, sc_error_detail());
		return rv;
	}
	return config_from_text(file, text, len, out);
}

int sc_config_parse(const char *origin, const void *text, size_t len, sc_config **out)
{
	unsigned char *copy;
	char *file;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for configuration");
	*out = NULL;
	if (origin == NULL || *origin == '\0' || (text == NULL && len > 0))
		return sc_error_set(SC_ERR_INVALID, "no configuration text to parse");
	if (len > SC_CONFIG_MAX_SIZE)
		return sc_error_set(SC_ERR_CONFIG, "configuration %s is larger than %d bytes",
				    origin, SC_CONFIG_MAX_SIZE);
	file = strdup(origin);
	copy = malloc(len + 1);
	if (file == NULL || copy == NULL) {
		free(file);
		free(copy);
		return sc_error_set(SC_ERR_NOMEM, "out of memory reading configuration");
	}
	if (len > 0)
		memcpy(copy, text, len);
	copy[len] = '\0';
	return config_from_text(file, copy, len, out);
}

const char *sc_config_file(const sc_config *cfg)
{
	return cfg != NULL ? cfg->file : NULL;
}

const char *sc_config_dir(const sc_config *cfg)
{
	return cfg != NULL ? cfg->dir : NULL;
}

const char *sc_config_str(const sc_config *cfg, const char *key, const char *def)
{
	struct sc_config_key *k = config_find(cfg, key);

	return k != NULL && k->n > 0 ? k->values[k->n - 1] : def;
}

int sc_config_int(const sc_config *cfg, const char *key, int64_t def, int64_t *out)
{
	const char *v = sc_config_str(cfg, key, NULL);
	char *end = NULL;
	long long n;
	int64_t mult = 1;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for configuration value");
	*out = def;
	if (v == NULL)
		return SC_OK;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (end == v || errno != 0)
		goto bad;
	if (*end != '\0') {
		switch (*end) {
		case 'k': case 'K': mult = 1024; break;
		case 'm': case 'M': mult = 1024 * 1024; break;
		case 'g': case 'G': mult = 1024 * 1024 * 1024; break;
		default: goto bad;
		}
		end++;
		if (*end == 'i' || *end == 'I')
			end++;
		if (*end == 'b' || *end == 'B')
			end++;
		if (*end != '\0')
			goto bad;
		if (n > INT64_MAX / mult || n < INT64_MIN / mult)
			goto bad;
	}
	*out = (int64_t)n * mult;
	return SC_OK;
bad:
	return sc_error_set(SC_ERR_CONFIG,
			    "%s: %s = '%s' is not a number (digits, optionally followed by k, M or G)",
			    cfg->file, key, v);
}

int sc_config_bool(const sc_config *cfg, const char *key, int def, int *out)
{
	static const char *const yes[] = { "yes", "true", "1", "on" };
	static const char *const no[] = { "no", "false", "0", "off" };
	const char *v = sc_config_str(cfg, key, NULL);
	size_t i;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for configuration value");
	*out = def;
	if (v == NULL)
		return SC_OK;
	for (i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = 1;
			return SC_OK;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = 0;
			return SC_OK;
		}
	}
	return sc_error_set(SC_ERR_CONFIG, "%s: %s = '%s' is not a boolean (use yes or no)",
			    cfg->file, key, v);
}

const char *const *sc_config_list(const sc_config *cfg, const char *key, size_t *n)
{
	static const char *const empty[] = { NULL };
	struct sc_config_key *k = config_find(cfg, key);

	if (k == NULL) {
		if (n != NULL)
			*n = 0;
		return empty;
	}
	if (n != NULL)
		*n = k->n;
	return k->values;
}

char *sc_config_path(const sc_config *cfg, const char *key, const char *def)
{
	const char *v = sc_config_str(cfg, key, def);
	const char *dir = sc_config_dir(cfg);
	size_t len;
	char *res;

	if (v == NULL)
		return NULL;
	if (v[0] == '/' || dir == NULL)
		return strdup(v);
	len = strlen(dir) + 1 + strlen(v) + 1;
	res = malloc(len);
	if (res == NULL) {
		sc_error_set(SC_ERR_NOMEM, "out of memory");
		return NULL;
	}
	snprintf(res, len, "%s/%s", dir, v);
	return res;
}
