/* The allocators the heap benchmark runs side by side. */
#ifndef SHMDS_BENCH_H
#define SHMDS_BENCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Boost.Interprocess managed_shared_memory (default rbtree_best_fit) in a
 * shared-memory segment of `size` bytes (alloc_boost.cpp). Blocks are named
 * by their address. */
int bench_boost_open(size_t size);
uint64_t bench_boost_alloc(size_t len); /* 0 when full */
void bench_boost_free(uint64_t h);
void *bench_boost_ptr(uint64_t h);
void bench_boost_close(void);

#ifdef __cplusplus
}
#endif

#endif
