// Boost.Interprocess unordered_map in managed_shared_memory, on the same
// workload as bench_map: prints "name ops_per_second" lines that bench_map
// puts into its table.
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/unordered_map.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sys/wait.h>
#include <unistd.h>

extern "C" {
#include "map_bench.h"
}

namespace bip = boost::interprocess;

struct Key {
    char b[16];
    bool operator==(const Key &o) const { return std::memcmp(b, o.b, 16) == 0; }
};
struct KeyHash {
    std::size_t operator()(const Key &k) const { return boost::hash_range(k.b, k.b + 16); }
};
typedef std::pair<const Key, uint64_t> Value;
typedef bip::allocator<Value, bip::managed_shared_memory::segment_manager> Alloc;
typedef boost::unordered_map<Key, uint64_t, KeyHash, std::equal_to<Key>, Alloc> Map;

static uint64_t lookups(Map *m, uint64_t n, uint64_t p)
{
    uint64_t found = 0;
    for (uint64_t i = 0; i < n; i++) {
        Key k;
        bench_key(bench_pick(i, p, n), k.b);
        found += m->find(k) != m->end();
    }
    return found;
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1000000;
    char name[64];
    std::snprintf(name, sizeof name, "shmds-bench-boost-%ld", (long)getpid());
    bip::shared_memory_object::remove(name);
    {
        bip::managed_shared_memory seg(bip::create_only, name, n * 128 + (64u << 20));
        Map *m = seg.construct<Map>("map")(n, KeyHash(), std::equal_to<Key>(),
                                           Alloc(seg.get_segment_manager()));
        double t0 = bench_now();
        for (uint64_t i = 0; i < n; i++) {
            Key k;
            bench_key(i, k.b);
            m->emplace(k, i);
        }
        double t1 = bench_now();
        std::printf("boost_insert %.0f\n", (double)n / (t1 - t0));
        t0 = bench_now();
        double c0 = bench_cpu();
        uint64_t f = lookups(m, n, 0);
        t1 = bench_now();
        double c1 = bench_cpu();
        if (f != n)
            return 1;
        std::printf("boost_lookup %.0f\n", (double)n / (t1 - t0));
        std::printf("boost_lookup_cpu %.0f\n", (double)n / (c1 - c0));
        std::fflush(stdout);
        t0 = bench_now();
        pid_t pids[2];
        for (int p = 0; p < 2; p++) {
            pids[p] = fork();
            if (pids[p] == 0) {
                bip::managed_shared_memory s2(bip::open_only, name);
                Map *m2 = s2.find<Map>("map").first;
                _exit(lookups(m2, n, (uint64_t)p + 1) == n ? 0 : 1);
            }
        }
        int bad = 0;
        for (int p = 0; p < 2; p++) {
            int st;
            waitpid(pids[p], &st, 0);
            bad |= !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
        t1 = bench_now();
        std::printf("boost_lookup2 %.0f\n", 2.0 * (double)n / (t1 - t0));
        if (bad)
            return 1;
    }
    bip::shared_memory_object::remove(name);
    return 0;
}
