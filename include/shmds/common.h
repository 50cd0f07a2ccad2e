/**
 * @file shmds/common.h
 * @brief What every shmds header needs: the export macro and the offset type.
 *
 * Included by the other headers; users include <shmds.h>.
 */
#ifndef SHMDS_COMMON_H
#define SHMDS_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(SHMDS_BUILDING) && defined(__GNUC__)
#define SHMDS_API __attribute__((visibility("default")))
#else
/** Marks a function as part of the library's exported interface. */
#define SHMDS_API
#endif

#ifdef __cplusplus
#define SHMDS_BEGIN_DECLS extern "C" {
#define SHMDS_END_DECLS }
#else
/** Opens the headers' declarations: extern "C" for C++ callers. */
#define SHMDS_BEGIN_DECLS
/** Closes what SHMDS_BEGIN_DECLS opened. */
#define SHMDS_END_DECLS
#endif

SHMDS_BEGIN_DECLS

/**
 * A byte offset from the base of a region. Every link stored inside a region
 * is one of these, never a pointer, so it means the same thing in every
 * process whatever address the region is mapped at.
 */
typedef uint64_t shmds_off_t;

/** The null offset. Offset 0 is the region header, never an allocation. */
#define SHMDS_NULL ((shmds_off_t)0)

/*
 * Conventions every module follows (one policy, so no call needs its own
 * note): a NULL handle (region, list, map, queue) or a NULL required
 * output pointer gives -EINVAL and changes nothing; the close functions
 * accept NULL and do nothing; accessors without an error channel
 * (shmds_region_base, shmds_region_size, shmds_usable_size) return NULL
 * or 0 for a NULL handle. Names of objects in a region are 1 to
 * SHMDS_ROOT_NAME_MAX bytes.
 */

SHMDS_END_DECLS

#endif
