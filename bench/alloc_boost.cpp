// Boost.Interprocess's managed_shared_memory behind bench.h's C interface.
// Its default allocator, rbtree_best_fit, guards the segment with an
// interprocess_mutex: the same job shmds's heap does.
#include "bench.h"

#include <boost/interprocess/managed_shared_memory.hpp>
#include <new>
#include <string>
#include <unistd.h>

namespace bip = boost::interprocess;

static bip::managed_shared_memory *seg;
static std::string seg_name;

extern "C" int bench_boost_open(size_t size)
{
    seg_name = "shmds-bench-boost-" + std::to_string(getpid());
    bip::shared_memory_object::remove(seg_name.c_str());
    try {
        seg = new bip::managed_shared_memory(bip::create_only, seg_name.c_str(), size);
    } catch (const std::exception &) {
        return -1;
    }
    return 0;
}

extern "C" uint64_t bench_boost_alloc(size_t len)
{
    return (uint64_t)(uintptr_t)seg->allocate(len, std::nothrow);
}

extern "C" void bench_boost_free(uint64_t h)
{
    seg->deallocate((void *)(uintptr_t)h);
}

extern "C" void *bench_boost_ptr(uint64_t h)
{
    return (void *)(uintptr_t)h;
}

extern "C" void bench_boost_close(void)
{
    delete seg;
    seg = nullptr;
    bip::shared_memory_object::remove(seg_name.c_str());
}
