/**
 * @file shmds/error.h
 * @brief Error codes, and their names and descriptions.
 *
 * Every shmds function that can fail returns an int: 0 on success, a
 * negative errno value for system errors (-ENOMEM, -EEXIST, -ETIMEDOUT, ...),
 * or one of the SHMDS_E* codes below for what errno cannot say. The library
 * codes are negative and lie in a range of their own (-4001 to -4099), far
 * from any errno value. Two positive values exist: SHMDS_RECOVERED, a success
 * that also tells the caller a dead process's change was repaired, and
 * SHMDS_FILL, shmds_map_fetch()'s "miss: you compute the value" (see
 * shmds/map.h).
 */
#ifndef SHMDS_ERROR_H
#define SHMDS_ERROR_H

#include <shmds/common.h>

SHMDS_BEGIN_DECLS

/**
 * The library's own codes: X(name, value, description).
 * Used once to make the enum below and once (in error.c) to make the tables
 * behind shmds_strerror() and shmds_errname(), so the three never drift.
 */
#define SHMDS_ERRNO_MAP(X)                                                          \
    X(EFORMAT, -4001, "not a shmds region, or a region of another format version") \
    X(EABI, -4002,                                                                  \
      "region made by a process with another ABI (word size, lock size or "         \
      "endianness)")                                                                \
    X(ECORRUPT, -4003, "a check on shared data failed; nothing was changed")        \
    X(ENOTRECOVERABLE, -4004,                                                       \
      "a dead process's change could not be repaired; the object is fenced off")    \
    X(ETYPE, -4005, "the named object exists but is of another kind")               \
    X(ECLOSED, -4006, "the queue was shut down and is drained: end of stream")      \
    X(ERDONLY, -4007, "the region is attached read-only; this operation writes") \
    X(EVERSION, -4008,                                                              \
      "the key's version is not the one expected: it was written since it was "     \
      "read")

/** Library error codes. All negative; see SHMDS_ERRNO_MAP for their meaning. */
enum shmds_errno {
#define SHMDS_ERRNO_ENUM_(name, value, text) SHMDS_##name = (value),
    SHMDS_ERRNO_MAP(SHMDS_ERRNO_ENUM_)
#undef SHMDS_ERRNO_ENUM_
    /** Success: the lock was taken, its previous owner died, and the
     *  change that owner left half done was repaired. Positive on purpose:
     *  `if (rc < 0)` treats it as success. */
    SHMDS_RECOVERED = 1,
    /** Not an error: shmds_map_fetch() found no value and made the caller
     *  the one process that computes it (the caller holds the fill lease
     *  and must end it with shmds_map_fill_done() or shmds_map_fill_abort()). */
    SHMDS_FILL = 2
};

/**
 * A description of any value a shmds call returns: 0, SHMDS_RECOVERED, a
 * SHMDS_E* code or a negative errno. Never NULL; the string is static.
 * Unknown values give "unknown error".
 */
SHMDS_API const char *shmds_strerror(int err);

/**
 * The symbolic name of any value a shmds call returns: "SHMDS_ECORRUPT",
 * "ENOENT", "SHMDS_RECOVERED", "OK" for 0. Never NULL; the string is static.
 * Unknown values give "UNKNOWN".
 */
SHMDS_API const char *shmds_errname(int err);

SHMDS_END_DECLS

#endif
