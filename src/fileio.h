/*
 * fileio.h -- atomic file replacement, opening files for reading (regular files only, without
 * blocking) and bounded whole-file reads (internal).
 *
 * An atomic write goes to "<path>.tmp.<pid>" in the same directory; commit flushes and fsyncs
 * that file, renames it over <path> (atomic on POSIX file systems) and fsyncs the directory so
 * the rename itself survives a crash. Until the rename, <path> is never touched: any failure,
 * or an explicit abort, removes the temporary file and leaves the previous file as it was.
 * See docs/internals/checkpoint-format.md ("Atomic write protocol").
 *
 * Errors are reported through mni_err() with the path and strerror(errno) in the message.
 */
#ifndef MNI_FILEIO_H
#define MNI_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mni.h"

/* A file being written; opaque. Created by mni_afile_open, consumed by commit or abort. */
struct mni_afile;

/* Creates (truncating a stale one) the temporary file "<path>.tmp.<pid>" for writing.
 * *out is set to NULL on failure. Errors: MNEMO_ERR_ARG (NULL path), MNEMO_ERR_NOMEM,
 * MNEMO_ERR_IO (directory missing, no permission, ...). */
enum mnemo_status mni_afile_open(struct mni_afile **out, const char *path);

/* Appends n bytes (buffered). A failure is sticky: every later write and the commit return it.
 * Errors: MNEMO_ERR_IO. n == 0 is a no-op. */
enum mnemo_status mni_afile_write(struct mni_afile *f, const void *buf, size_t n);

/* fflush + fsync + close the temporary file, rename it over the target, fsync the directory.
 * Always consumes f (it is freed; on failure the temporary file is removed first). If the
 * status is not MNEMO_OK the previous file at the target is untouched, with one exception: a
 * failure to fsync the directory happens after the rename (the new file is in place but its
 * durability is not guaranteed), and the message says so. Errors: MNEMO_ERR_IO. */
enum mnemo_status mni_afile_commit(struct mni_afile *f);

/* Closes and removes the temporary file and frees f. NULL-safe. The target is untouched. */
void mni_afile_abort(struct mni_afile *f);

/* The temporary path in use (for messages and tests). Borrowed; valid until commit/abort. */
const char *mni_afile_tmp_path(const struct mni_afile *f);

/* Renames from over to (a fault point of mni_afile_fault_after, like the rename in commit),
 * for callers that stage several files and move them into place together. Allocates nothing.
 * Does not sync the directory: call mni_sync_dir after the last rename.
 * Errors: MNEMO_ERR_IO ("cannot rename <from> to <to>: <strerror>"); to is then untouched. */
enum mnemo_status mni_rename(const char *from, const char *to);

/* fsync the directory dir so that renames into it are durable; file systems that cannot sync
 * a directory count as success. Allocates nothing. Errors: MNEMO_ERR_IO. */
enum mnemo_status mni_sync_dir(const char *dir);

/* Removes the file at path; one that does not exist counts as removed. A fault point of
 * mni_afile_fault_after. Errors: MNEMO_ERR_IO ("cannot remove <path>: <strerror>"). */
enum mnemo_status mni_remove(const char *path);

/* If name (a directory entry) is "<target>.tmp.<pid>", as mni_afile_open names its temporary
 * files, and no process <pid> exists any more, returns the length of <target>; else 0. Such a
 * file is the debris of a writer killed before its commit: no one will ever rename it. A pid
 * that exists (even another user's: kill() says EPERM) counts as a writer still at work, so a
 * recycled pid only delays the removal. Pids are this machine's: a directory shared with
 * writers on other hosts must not be cleaned this way. */
size_t mni_afile_dead_tmp(const char *name);

/* Calls fn(name, user) for every entry of the directory dir but "." and ".."; stops at the
 * first status other than MNEMO_OK and returns it. fn may remove the entry it is given.
 * Errors: MNEMO_ERR_IO ("cannot read directory <dir>: ..."), or fn's. */
typedef enum mnemo_status (*mni_dir_fn)(const char *name, void *user);
enum mnemo_status mni_dir_each(const char *dir, mni_dir_fn fn, void *user);

/* Opens path for reading if, and only if, it is a regular file, without ever blocking: the
 * open uses O_NONBLOCK, so a FIFO that no one writes (or a device) cannot hang the caller the
 * way fopen() would; fstat then must report a regular file, and O_NONBLOCK is cleared before
 * the descriptor becomes a stream (close-on-exec). what names the file in messages (e.g.
 * "checkpoint"; NULL for none). *size gets the size at open (size may be NULL). *out is NULL
 * on failure; the caller fcloses it. Errors: MNEMO_ERR_IO ("cannot open <what> <path>: ...",
 * "cannot read <what> <path>: not a regular file (a FIFO)", ...). */
enum mnemo_status mni_fopen_regular(FILE **out, const char *path, const char *what,
                                    uint64_t *size);

/* Reads a whole regular file of at most max_bytes into a fresh buffer, NUL-terminated (so text
 * can be parsed in place; the NUL is not counted in *n_out). Caller frees *out with mni_free().
 * On failure *out is NULL. Opened with mni_fopen_regular (a FIFO fails at once).
 * Errors: MNEMO_ERR_IO (missing, unreadable, not a regular file), MNEMO_ERR_FORMAT (larger
 * than max_bytes), MNEMO_ERR_NOMEM. n_out may be NULL. */
enum mnemo_status mni_read_file(const char *path, size_t max_bytes, char **out, size_t *n_out);

/* Test hook (SQLite-style I/O error simulation): the n-th fallible step of an atomic write from
 * now on (0 = the next one) fails as if with EIO. Steps are: opening the temporary file, each
 * mni_afile_write call, fflush, fsync, fclose and rename (the directory fsync, which comes after
 * the rename, is not a fault point), and each mni_rename and mni_remove. One-shot; n < 0
 * disables. Process-wide, not thread-safe. */
void mni_afile_fault_after(long n);
/* 1 while a fault armed by mni_afile_fault_after has not fired yet (a test's way to know
 * that its n went past the last fault point). */
int mni_afile_fault_pending(void);

#endif /* MNI_FILEIO_H */
