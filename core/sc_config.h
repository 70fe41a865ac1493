/*
 * Deployment configuration: an INI-style file ("[section]" headers,
 * "key = value" lines, '#' comments).  Keys are addressed as "section.key".
 * A key may repeat (e.g. several authz.trusted_key lines); sc_config_list()
 * returns every value in file order, the other getters return the last one.
 *
 * The file is found by --config, else $SMARTCERT_CONF.  Relative paths in the
 * file are relative to the directory holding it (sc_config_path()).
 * Documented keys: docs/configuration.md.
 */
#ifndef SC_CONFIG_H
#define SC_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct sc_config sc_config;

/* Parse `path`.  Errors: SC_ERR_CONFIG (syntax, with line number in the
 * detail), SC_ERR_IO (unreadable), SC_ERR_NOMEM.  *out is NULL on error. */
int sc_config_load(const char *path, sc_config **out);

/* Parse `len` bytes of configuration text exactly as sc_config_load() parses
 * a file.  `origin` names the text in messages and its directory anchors
 * relative paths.  Errors as sc_config_load(), never SC_ERR_IO. */
int sc_config_parse(const char *origin, const void *text, size_t len, sc_config **out);

/* Resolve the config path from an explicit argument (may be NULL) or
 * $SMARTCERT_CONF.  Returns NULL if neither is set. */
const char *sc_config_locate(const char *explicit_path);

void sc_config_free(sc_config *cfg);

/* Absolute path of the config file and of the directory holding it. */
const char *sc_config_file(const sc_config *cfg);
const char *sc_config_dir(const sc_config *cfg);

/* Value of "section.key", or `def` if absent.  Pointer valid while cfg lives. */
const char *sc_config_str(const sc_config *cfg, const char *key, const char *def);

/* Integer value (decimal; suffixes k/M/G for sizes are accepted).  Returns
 * SC_ERR_CONFIG if present but not a number; *out = def if absent. */
int sc_config_int(const sc_config *cfg, const char *key, int64_t def, int64_t *out);

/* Boolean: yes/no/true/false/1/0/on/off.  SC_ERR_CONFIG if unparsable. */
int sc_config_bool(const sc_config *cfg, const char *key, int def, int *out);

/* Every value of a repeated key, in file order.  *n may be 0.  The array is
 * owned by cfg. */
const char *const *sc_config_list(const sc_config *cfg, const char *key, size_t *n);

/* A path value resolved against sc_config_dir(); malloc'd, caller frees.
 * Returns NULL (and no error) when absent and def is NULL. */
char *sc_config_path(const sc_config *cfg, const char *key, const char *def);

#endif
