/**
 * @file shmds.h
 * @brief shmds: crash-safe data structures in POSIX shared memory.
 *
 * Include this one header to get the whole library. Link with -lshmds
 * (pkg-config --cflags --libs shmds).
 */
#ifndef SHMDS_H
#define SHMDS_H

#include <shmds/common.h>
#include <shmds/version.h>
#include <shmds/error.h>
#include <shmds/lock.h>
#include <shmds/region.h>
#include <shmds/alloc.h>
#include <shmds/list.h>
#include <shmds/guard.h>
#include <shmds/map.h>
#include <shmds/queue.h>
#include <shmds/table.h>

#endif
