/*
 * What the benchmark binaries share: a monotonic clock in seconds, and a
 * number read from the environment.
 */
#ifndef SC_TEST_BENCHUTIL_H
#define SC_TEST_BENCHUTIL_H

#include <stdlib.h>
#include <time.h>

static inline double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The environment's `name` as a number; `def` when unset or empty. */
static inline long bench_env_long(const char *name, long def)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? strtol(v, NULL, 10) : def;
}

#endif
