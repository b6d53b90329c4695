/*
 * st.h -- safetensors files: an atomic writer and a validating reader (internal).
 *
 * Layout (https://huggingface.co/docs/safetensors, described in full in
 * docs/internals/checkpoint-format.md):
 *   u64 little-endian N | N bytes of UTF-8 JSON header | data section
 * The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} with
 * offsets relative to the start of the data section, plus an optional "__metadata__" object of
 * string -> string. The writer pads the header with spaces so that the data section starts at
 * an 8-byte aligned file offset, and stores tensors contiguously in the order given.
 *
 * The reader trusts nothing in the file: every length, offset, dimension and type is checked
 * (see mni_st_open) before any of it is used, and tensor data is read with stdio into caller
 * memory only after the caller's expected dtype and shape have matched the header.
 * Data are raw little-endian; this code is for little-endian hosts (checked at compile time).
 */
#ifndef MNI_ST_H
#define MNI_ST_H

#include <stddef.h>
#include <stdint.h>

#include "mni.h"

#define MNI_ST_MAX_DIM 8                     /* the most dimensions a tensor may have */
#define MNI_ST_MAX_HEADER ((size_t)100000000) /* 100 MB, the safetensors library's own limit */

/* Element types: the safetensors dtypes with a fixed little-endian layout. Values are ours
 * (not stored in files); files carry the names ("F32", ...). BOOL is one byte, 0 or 1. */
enum mni_st_dtype {
    MNI_ST_F32 = 0,
    MNI_ST_I32 = 1,
    MNI_ST_U16 = 2,
    MNI_ST_U8 = 3,
    MNI_ST_I64 = 4,
    MNI_ST_F64 = 5,
    MNI_ST_F16 = 6,  /* IEEE half; stored and read as raw uint16 bits */
    MNI_ST_BF16 = 7, /* bfloat16; stored and read as raw uint16 bits */
    MNI_ST_I8 = 8,
    MNI_ST_I16 = 9,
    MNI_ST_U32 = 10,
    MNI_ST_U64 = 11,
    MNI_ST_BOOL = 12,
    MNI_ST_DTYPE_COUNT
};

/* "F32", ... or NULL for an invalid value. */
const char *mni_st_dtype_name(enum mni_st_dtype dt);
/* Bytes per element, or 0 for an invalid value. */
size_t mni_st_dtype_size(enum mni_st_dtype dt);

/* One tensor to write. shape[0..ndim-1] are the dimensions, outermost first (row-major, as in
 * PyTorch/numpy); ndim 0 is a scalar (one element). data holds prod(shape) elements, native
 * (= little-endian) layout; it may be NULL only when that product is 0. Everything borrowed. */
struct mni_st_tensor {
    const char *name;
    enum mni_st_dtype dtype;
    int ndim;
    size_t shape[MNI_ST_MAX_DIM];
    const void *data;
};

/* Writes n tensors, in the given order, and n_meta metadata pairs to path, atomically (a
 * temporary file renamed over path; see fileio.h). meta_kv is a flat array of 2*n_meta C
 * strings: key0, value0, key1, value1, ... (safetensors metadata is string -> string), stored
 * in "__metadata__"; it may be NULL when n_meta is 0.
 * Errors: MNEMO_ERR_ARG (NULL/empty/duplicate name, a name "__metadata__", bad dtype or ndim,
 * NULL data for a non-empty tensor, NULL or duplicate metadata key, NULL value, sizes that
 * overflow, a header over MNI_ST_MAX_HEADER), MNEMO_ERR_NOMEM, MNEMO_ERR_IO. On any error the
 * previous file at path is untouched. */
enum mnemo_status mni_st_write(const char *path, const struct mni_st_tensor *t, size_t n,
                               const char *const *meta_kv, size_t n_meta);

/* An open, validated file. Opaque. */
struct mni_st_file;

/* What the header says about one tensor. Borrowed from the file; valid until mni_st_close. */
struct mni_st_info {
    const char *name;
    enum mni_st_dtype dtype;
    int ndim;
    size_t shape[MNI_ST_MAX_DIM]; /* entries past ndim are 0 */
    size_t nbytes;                /* prod(shape) * dtype size; checked against data_offsets */
};

/* Opens path, reads and validates the header, keeps the file open for mni_st_read.
 * Validated before anything is used: file at least 8 bytes; header length N > 0 and at most
 * both file size - 8 and MNI_ST_MAX_HEADER; header valid UTF-8 without control characters,
 * one JSON object followed only by whitespace; each entry an object with a known "dtype"
 * string, a "shape" array of at most MNI_ST_MAX_DIM non-negative integers whose product times
 * the dtype size does not overflow, and "data_offsets" [begin, end] of integers with
 * end - begin equal to that byte size; names non-empty and unique; "__metadata__", if
 * present, an object of string values; the tensors exactly tile the data section (no
 * overlap, no gap, nothing outside it, no trailing bytes), as the safetensors spec requires.
 * *out is NULL on failure. Errors: MNEMO_ERR_IO (missing/unreadable/not a regular file; a
 * FIFO or device is refused at once, never waited on: see mni_fopen_regular in fileio.h),
 * MNEMO_ERR_FORMAT (anything above, with the path and the problem in the message),
 * MNEMO_ERR_NOMEM. */
enum mnemo_status mni_st_open(struct mni_st_file **out, const char *path);

/* Closes the file and frees everything, including all borrowed strings and infos. NULL-safe. */
void mni_st_close(struct mni_st_file *f);

/* Metadata value for key, or NULL if absent. Borrowed. */
const char *mni_st_meta(const struct mni_st_file *f, const char *key);
/* Number of metadata pairs; mni_st_meta_at gives the i-th (header order), or NULLs if i is
 * out of range. Borrowed. */
size_t mni_st_meta_count(const struct mni_st_file *f);
void mni_st_meta_at(const struct mni_st_file *f, size_t i, const char **key, const char **value);

/* Number of tensors; mni_st_info_at gives the i-th in header order (NULL if out of range). */
size_t mni_st_count(const struct mni_st_file *f);
const struct mni_st_info *mni_st_info_at(const struct mni_st_file *f, size_t i);
/* The tensor called name, or NULL. */
const struct mni_st_info *mni_st_find(const struct mni_st_file *f, const char *name);

/* Copies tensor `name` into dst (which must hold prod(shape) * dtype size bytes) after
 * checking that it exists and that its dtype, ndim and every dimension equal the expected
 * ones. Errors: MNEMO_ERR_FORMAT ("checkpoint tensor 'x' has shape [768, 256], expected
 * [768, 512] (file ...)", likewise for a missing tensor or another dtype), MNEMO_ERR_IO (the
 * file shrank or a read failed). */
enum mnemo_status mni_st_read(struct mni_st_file *f, const char *name, enum mni_st_dtype dtype,
                              int ndim, const size_t *shape, void *dst);
/* The checks of mni_st_read without the copy: the tensor exists with this dtype and shape.
 * Since mni_st_open has checked that the tensors tile the data section, tensors that pass
 * are known to fit in the file: a loader can check a whole table before it allocates.
 * Errors: as mni_st_read's, without MNEMO_ERR_IO. */
enum mnemo_status mni_st_check(const struct mni_st_file *f, const char *name,
                               enum mni_st_dtype dtype, int ndim, const size_t *shape);

#endif /* MNI_ST_H */
