/*
 * fuzz.h -- what the libFuzzer harnesses (fuzz/fuzz_*.c) share: an in-memory file for the
 * readers that take a path, and a check that turns a broken promise into a crash that
 * libFuzzer records. Built only with -DMNEMO_FUZZ=ON (clang); docs/internals/fuzzing.md.
 */
#ifndef MNEMO_FUZZ_H
#define MNEMO_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <sanitizer/common_interface_defs.h>

/* The path ("/proc/self/fd/N") of an in-memory file (memfd) that holds data[0..size): the
 * readers open it as they would a regular file on disk. One file per process, rewritten on
 * every call. Aborts if the file cannot be made (a harness failure, not a finding). */
const char *fuzz_file(const uint8_t *data, size_t size);

#define FUZZ_STR2(x) #x
#define FUZZ_STR(x) FUZZ_STR2(x)
/* A promise of the code under test; its failure is a finding. The message goes where the
 * sanitizers report (libFuzzer's -close_fd_mask closes stderr itself). */
#define FUZZ_CHECK(c)                                                                          \
    do {                                                                                       \
        if (!(c)) {                                                                            \
            __sanitizer_report_error_summary("fuzz check failed: " #c                          \
                                             " (" __FILE__ ":" FUZZ_STR(__LINE__) ")");       \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

#endif
