/* What a fuzz target provides to the corpus replay driver (fuzz-replay.c),
 * which runs it in every build; the same target source, built with clang
 * -fsanitize=fuzzer, is the libFuzzer binary. */
#ifndef SC_FUZZ_REPLAY_H
#define SC_FUZZ_REPLAY_H

#include <stddef.h>
#include <stdint.h>

/* The target: checks its own invariants and aborts when one fails. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The result a corpus file named expect-<errname>--<what> must give: SC_OK
 * or an SC_ERR_* code. */
int sc_fuzz_result(const uint8_t *data, size_t size);

/* Nonzero when no changed copy of an expect-ok input may give SC_OK (signed
 * inputs); zero when a mutation may well stay valid (text formats). */
extern const int sc_fuzz_mutants_refused;

#endif
