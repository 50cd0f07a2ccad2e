/*
 * Error names and descriptions.
 *
 * Layer: the bottom (calls no other module).
 *
 * The library's own codes come from one X-macro table (SHMDS_ERRNO_MAP in
 * shmds/error.h), so the enum, the names and the descriptions cannot drift.
 * Negative errno values are named by the C library when it can
 * (strerrorname_np / strerrordesc_np, glibc 2.32), otherwise by a small table
 * of the errno values shmds itself returns.
 */
#include "internal.h"

#include <string.h>

#if !defined(HAVE_STRERRORNAME_NP) || !defined(HAVE_STRERRORDESC_NP)
/* The errno values the library returns, for C libraries that cannot name them. */
#define SHMDS_SYS_ERRNO_MAP(X)                                   \
    X(EPERM, "operation not permitted")                         \
    X(ENOENT, "no such file or directory")                      \
    X(EINTR, "interrupted system call")                         \
    X(EIO, "input/output error")                                \
    X(EAGAIN, "resource temporarily unavailable")               \
    X(ENOMEM, "cannot allocate memory")                         \
    X(EACCES, "permission denied")                              \
    X(EBUSY, "device or resource busy")                         \
    X(EEXIST, "file exists")                                    \
    X(EINVAL, "invalid argument")                               \
    X(EMFILE, "too many open files")                            \
    X(EFBIG, "file too large")                                  \
    X(ENOSPC, "no space left on device")                        \
    X(ERANGE, "numerical result out of range")                  \
    X(EDEADLK, "resource deadlock avoided")                     \
    X(ENAMETOOLONG, "file name too long")                       \
    X(EOVERFLOW, "value too large for defined data type")       \
    X(EMSGSIZE, "message too long")                             \
    X(ENOBUFS, "no buffer space available")                     \
    X(ETIMEDOUT, "connection timed out")                        \
    X(EOWNERDEAD, "owner died")                                 \
    X(ENOTRECOVERABLE, "state not recoverable")

struct sys_errno {
    int value;
    const char *name;
    const char *text;
};

static const struct sys_errno sys_errnos[] = {
#define SHMDS_SYS_ENTRY_(name, text) {name, #name, text},
    SHMDS_SYS_ERRNO_MAP(SHMDS_SYS_ENTRY_)
#undef SHMDS_SYS_ENTRY_
};

static const struct sys_errno *sys_errno_find(int e)
{
    for (size_t i = 0; i < sizeof sys_errnos / sizeof sys_errnos[0]; i++)
        if (sys_errnos[i].value == e)
            return &sys_errnos[i];
    return NULL;
}
#endif

SHMDS_API const char *shmds_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case SHMDS_RECOVERED:
        return "success; a dead process's half-done change was repaired";
    case SHMDS_FILL:
        return "a miss: the caller holds the fill lease and computes the value";
#define SHMDS_ERR_TEXT_(name, value, text) \
    case SHMDS_##name:                     \
        return text;
        SHMDS_ERRNO_MAP(SHMDS_ERR_TEXT_)
#undef SHMDS_ERR_TEXT_
    default:
        break;
    }
    if (err < 0 && err > -4000) {
#ifdef HAVE_STRERRORDESC_NP
        const char *s = strerrordesc_np(-err);
        if (s != NULL)
            return s;
#else
        const struct sys_errno *e = sys_errno_find(-err);
        if (e != NULL)
            return e->text;
#endif
    }
    return "unknown error";
}

SHMDS_API const char *shmds_errname(int err)
{
    switch (err) {
    case 0:
        return "OK";
    case SHMDS_RECOVERED:
        return "SHMDS_RECOVERED";
    case SHMDS_FILL:
        return "SHMDS_FILL";
#define SHMDS_ERR_NAME_(name, value, text) \
    case SHMDS_##name:                     \
        return "SHMDS_" #name;
        SHMDS_ERRNO_MAP(SHMDS_ERR_NAME_)
#undef SHMDS_ERR_NAME_
    default:
        break;
    }
    if (err < 0 && err > -4000) {
#ifdef HAVE_STRERRORNAME_NP
        const char *s = strerrorname_np(-err);
        if (s != NULL)
            return s;
#else
        const struct sys_errno *e = sys_errno_find(-err);
        if (e != NULL)
            return e->name;
#endif
    }
    return "UNKNOWN";
}
