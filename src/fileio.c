/*
 * fileio.c -- atomic file replacement (temp file + fsync + rename + directory fsync), opening
 * regular files for reading without blocking, and a bounded whole-file reader. See fileio.h
 * for the contracts.
 *
 * Invariant: the target path is only ever modified by the single rename() in commit. Every
 * earlier failure path ends in remove_tmp(), so a failed or aborted write leaves no
 * "<path>.tmp.<pid>" behind and the previous file byte-for-byte as it was.
 */
#define _POSIX_C_SOURCE 200809L
#define _FILE_OFFSET_BITS 64 // st.c seeks with fseeko in the streams opened here
#include "fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

struct mni_afile {
    FILE *fp;    // the temporary file, open for writing; NULL once closed
    char *path;  // the target
    char *tmp;   // "<path>.tmp.<pid>"
    char *dir;   // the directory holding path, to fsync after the rename
    enum mnemo_status st; // sticky write error (MNEMO_OK while healthy)
};

/* ---- fault injection (tests only) ----------------------------------------------------------- */

static long fault_countdown = -1;

void mni_afile_fault_after(long n) { fault_countdown = n < 0 ? -1 : n; }
int mni_afile_fault_pending(void) { return fault_countdown >= 0; }

/* True if the current step should fail; sets errno = EIO like a real device error. */
static int fault_hit(void)
{
    if (fault_countdown < 0) return 0;
    if (fault_countdown-- > 0) return 0;
    fault_countdown = -1; // one-shot
    errno = EIO;
    return 1;
}

/* ---- helpers -------------------------------------------------------------------------------- */

/* Thread-safe strerror (the XSI strerror_r, selected by _POSIX_C_SOURCE without _GNU_SOURCE). */
static const char *errstr(int e, char *buf, size_t n)
{
    if (strerror_r(e, buf, n) != 0) snprintf(buf, n, "error %d", e);
    return buf;
}

static enum mnemo_status io_err(const char *what, const char *path, int e)
{
    char eb[128];
    return mni_err(MNEMO_ERR_IO, "%s %s: %s", what, path, errstr(e, eb, sizeof(eb)));
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = mni_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* The directory part of path ("." for a bare name, "/" for "/x"), or NULL when out of memory. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return dup_str(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *dir = mni_malloc(n + 1);
    if (dir) {
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    return dir;
}

static void free_afile(struct mni_afile *f)
{
    mni_free(f->tmp);
    mni_free(f->path);
    mni_free(f->dir);
    mni_free(f);
}

/* Closes (if still open) and unlinks the temporary file, then frees f. Preserves errno. */
static void remove_tmp(struct mni_afile *f)
{
    int e = errno;
    if (f->fp) fclose(f->fp);
    unlink(f->tmp);
    free_afile(f);
    errno = e;
}

/* fsync the directory dir so that a rename into it is durable. Returns 0 or errno. File
 * systems that cannot sync directories (EINVAL, ENOTSUP) count as success. Allocates nothing:
 * it runs after the rename, where an out-of-memory error could only be misreported. */
static int sync_dir(const char *dir)
{
    int e = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        e = errno;
    } else {
        if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP) e = errno;
        close(fd);
    }
    return e;
}

/* ---- atomic writer -------------------------------------------------------------------------- */

enum mnemo_status mni_afile_open(struct mni_afile **out, const char *path)
{
    *out = NULL;
    if (!path || !*path) return mni_err(MNEMO_ERR_ARG, "atomic write: empty path");
    struct mni_afile *f = mni_alloc(sizeof(*f));
    if (!f) return mni_err(MNEMO_ERR_NOMEM, "atomic write %s: out of memory", path);
    size_t n = strlen(path) + 32; // ".tmp." + up to 20 digits + NUL
    f->path = dup_str(path);
    f->tmp = f->path ? mni_malloc(n) : NULL;
    f->dir = f->tmp ? dir_of(path) : NULL;
    if (!f->dir) {
        free_afile(f);
        return mni_err(MNEMO_ERR_NOMEM, "atomic write %s: out of memory", path);
    }
    snprintf(f->tmp, n, "%s.tmp.%ld", path, (long)getpid());

    // O_TRUNC rather than O_EXCL: a stale temp left by a killed process with a recycled pid
    // must not block writing forever. Mode 0666 is filtered by the umask, as with fopen().
    int fd = -1;
    if (!fault_hit()) fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        enum mnemo_status st = io_err("cannot create", f->tmp, errno);
        free_afile(f);
        return st;
    }
    f->fp = fdopen(fd, "wb");
    if (!f->fp) {
        enum mnemo_status st = io_err("cannot open", f->tmp, errno);
        close(fd);
        remove_tmp(f);
        return st;
    }
    *out = f;
    return MNEMO_OK;
}

const char *mni_afile_tmp_path(const struct mni_afile *f) { return f->tmp; }

enum mnemo_status mni_afile_write(struct mni_afile *f, const void *buf, size_t n)
{
    if (f->st != MNEMO_OK) return f->st;
    if (n == 0) return MNEMO_OK;
    if (fault_hit() || fwrite(buf, 1, n, f->fp) != n) {
        f->st = io_err("cannot write", f->tmp, errno ? errno : EIO);
        return f->st;
    }
    return MNEMO_OK;
}

enum mnemo_status mni_afile_commit(struct mni_afile *f)
{
    enum mnemo_status st = f->st;
    if (st != MNEMO_OK) {
        // The message of the first failure is already recorded; keep it.
        remove_tmp(f);
        return st;
    }
    errno = 0;
    if (fault_hit() || fflush(f->fp) != 0) {
        st = io_err("cannot write", f->tmp, errno ? errno : EIO);
        remove_tmp(f);
        return st;
    }
    if (fault_hit() || fsync(fileno(f->fp)) != 0) {
        st = io_err("cannot sync", f->tmp, errno);
        remove_tmp(f);
        return st;
    }
    // fclose can report a deferred write error (NFS); the stream is gone either way.
    int close_failed = fault_hit();
    if (fclose(f->fp) != 0) close_failed = 1;
    f->fp = NULL;
    if (close_failed) {
        st = io_err("cannot close", f->tmp, errno ? errno : EIO);
        remove_tmp(f);
        return st;
    }
    if (fault_hit() || rename(f->tmp, f->path) != 0) {
        char eb[128];
        st = mni_err(MNEMO_ERR_IO, "cannot rename %s to %s: %s", f->tmp, f->path,
                     errstr(errno, eb, sizeof(eb)));
        remove_tmp(f);
        return st;
    }
    // From here on the new file is in place; only its durability is in question.
    int e = sync_dir(f->dir);
    if (e != 0) {
        char eb[128];
        st = mni_err(MNEMO_ERR_IO, "wrote %s but could not sync its directory: %s", f->path,
                     errstr(e, eb, sizeof(eb)));
    }
    free_afile(f);
    return st;
}

void mni_afile_abort(struct mni_afile *f)
{
    if (f) remove_tmp(f);
}

/* ---- staged renames ------------------------------------------------------------------------- */

enum mnemo_status mni_rename(const char *from, const char *to)
{
    if (fault_hit() || rename(from, to) != 0) {
        char eb[128];
        return mni_err(MNEMO_ERR_IO, "cannot rename %s to %s: %s", from, to,
                       errstr(errno, eb, sizeof(eb)));
    }
    return MNEMO_OK;
}

enum mnemo_status mni_sync_dir(const char *dir)
{
    int e = sync_dir(dir);
    return e ? io_err("cannot sync directory", dir, e) : MNEMO_OK;
}

/* ---- removing files, and debris of dead writers ---------------------------------------------- */

enum mnemo_status mni_remove(const char *path)
{
    if (fault_hit() || (unlink(path) != 0 && errno != ENOENT)) return io_err("cannot remove", path, errno);
    return MNEMO_OK;
}

size_t mni_afile_dead_tmp(const char *name)
{
    static const char tag[] = ".tmp.";
    const char *p = NULL;
    for (const char *q = strstr(name, tag); q; q = strstr(q + 1, tag)) p = q; // the last one
    if (!p || p == name) return 0;
    const char *digits = p + sizeof(tag) - 1;
    char *end;
    errno = 0;
    long pid = strtol(digits, &end, 10);
    if (*digits < '1' || *digits > '9' || *end || errno || pid <= 0 || (pid_t)pid != pid) return 0;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) return 0; // alive, or not ours to signal
    return (size_t)(p - name);
}

enum mnemo_status mni_dir_each(const char *dir, mni_dir_fn fn, void *user)
{
    DIR *d = opendir(dir);
    if (!d) return io_err("cannot read directory", dir, errno);
    enum mnemo_status st = MNEMO_OK;
    for (struct dirent *e; st == MNEMO_OK && (errno = 0, e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) st = fn(e->d_name, user);
    if (st == MNEMO_OK && errno) st = io_err("cannot read directory", dir, errno);
    closedir(d);
    return st;
}

/* ---- opening for reading -------------------------------------------------------------------- */

/* What a non-regular file is, for messages. */
static const char *kind_of(mode_t m)
{
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISCHR(m) || S_ISBLK(m)) return "a device";
    if (S_ISSOCK(m)) return "a socket";
    return "a special file";
}

enum mnemo_status mni_fopen_regular(FILE **out, const char *path, const char *what,
                                    uint64_t *size)
{
    *out = NULL;
    if (size) *size = 0;
    const char *w = what ? what : "", *sp = what ? " " : "";
    char eb[128];
    struct stat sb;
    enum mnemo_status st = MNEMO_OK;
    // stat first, so that a FIFO or a device is refused without even being opened (opening a
    // FIFO would wake a writer waiting for a reader). The open cannot block either, and its
    // fstat closes the race with a file replaced in between.
    if (stat(path, &sb) != 0)
        return mni_err(MNEMO_ERR_IO, "cannot open %s%s%s: %s", w, sp, path,
                       errstr(errno, eb, sizeof(eb)));
    int fd = -1, flags;
    if (S_ISREG(sb.st_mode)) {
        fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
            return mni_err(MNEMO_ERR_IO, "cannot open %s%s%s: %s", w, sp, path,
                           errstr(errno, eb, sizeof(eb)));
        if (fstat(fd, &sb) != 0) {
            st = mni_err(MNEMO_ERR_IO, "cannot stat %s%s%s: %s", w, sp, path,
                         errstr(errno, eb, sizeof(eb)));
            close(fd);
            return st;
        }
    }
    if (!S_ISREG(sb.st_mode)) {
        st = mni_err(MNEMO_ERR_IO, "cannot read %s%s%s: not a regular file (%s)", w, sp, path,
                     kind_of(sb.st_mode));
    } else if ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0 ||
               !(*out = fdopen(fd, "rb"))) {
        st = mni_err(MNEMO_ERR_IO, "cannot open %s%s%s: %s", w, sp, path,
                     errstr(errno, eb, sizeof(eb)));
    }
    if (st != MNEMO_OK) {
        if (fd >= 0) close(fd);
        return st;
    }
    if (size) *size = sb.st_size > 0 ? (uint64_t)sb.st_size : 0;
    return MNEMO_OK;
}

/* ---- bounded whole-file read ---------------------------------------------------------------- */

enum mnemo_status mni_read_file(const char *path, size_t max_bytes, char **out, size_t *n_out)
{
    *out = NULL;
    if (n_out) *n_out = 0;
    FILE *fp;
    uint64_t size;
    enum mnemo_status st = mni_fopen_regular(&fp, path, NULL, &size);
    if (st != MNEMO_OK) return st;
    if (size > max_bytes) {
        fclose(fp);
        return mni_err(MNEMO_ERR_FORMAT, "%s: file is %llu bytes, more than the limit of %zu",
                       path, (unsigned long long)size, max_bytes);
    }
    size_t n = (size_t)size;
    char *buf = mni_malloc(n + 1);
    if (!buf) {
        fclose(fp);
        return mni_err(MNEMO_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
    }
    // Read one byte more than expected to notice a file that grew since fstat.
    size_t got = fread(buf, 1, n + 1, fp);
    int rd_err = ferror(fp);
    int e = errno;
    fclose(fp);
    if (rd_err || got != n) {
        mni_free(buf);
        if (rd_err) return io_err("cannot read", path, e);
        return mni_err(MNEMO_ERR_IO, "cannot read %s: file changed size while reading", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (n_out) *n_out = n;
    return MNEMO_OK;
}
