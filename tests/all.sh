#!/bin/sh
# The one test command (README, CI): every check shmds must pass.
#   1. build with -Werror and run `make check`;
#   2. build with AddressSanitizer + UndefinedBehaviorSanitizer, -Werror and
#      --enable-debug (SHMDS_ASSERT on), run `make check` again;
#   3. the unit tests under valgrind (`make check-valgrind`);
#   4. build with --enable-fault-injection and run `make check`: the
#      fault-point sweep (tests/torture/fault_sweep) runs there;
#   5. when clang is installed: the libFuzzer harness, 400 000 inputs from a
#      fixed seed, so the run is reproducible (`make fuzz`, seeded with the
#      hostile images);
#   6. `make docs`: the HTML API reference builds from the headers with no
#      Doxygen warning;
#   7. `make distcheck`: the tarball builds, passes its tests and installs.
# Builds happen in _build-* folders, so the source tree stays clean.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if [ -f config.status ]; then
    echo "tests/all.sh: this source tree was configured in place; run 'make distclean' first" >&2
    exit 2
fi
[ -x configure ] || ./autogen.sh
jobs=$(nproc 2>/dev/null || echo 2)

show_failures() { # the logs of the tests that failed, in the current build
    for f in $(find . -name '*.log' ! -name config.log ! -name test-suite.log); do
        if grep -qE '^:test-result: (FAIL|ERROR)' "${f%.log}.trs" 2>/dev/null; then
            echo "--- $f"; tail -n 60 "$f"
        fi
    done
}

run() { # run DIR CONFIGURE-ARGS...
    dir=$1; shift
    echo "=== $dir: configure $* ==="
    mkdir -p "$top/$dir"
    cd "$top/$dir"
    "$top/configure" -q "$@"
    make -s -j"$jobs"
    if ! make -s -j"$jobs" check; then
        show_failures
        exit 1
    fi
    cd "$top"
}

run _build-werror --enable-werror
run _build-sanitizers --enable-werror --enable-sanitizers --enable-debug
echo "=== _build-werror: make check-valgrind ==="
(cd _build-werror && make -s check-valgrind || { show_failures; exit 1; })
run _build-fault --enable-werror --enable-fault-injection
if command -v clang >/dev/null 2>&1; then
    echo "=== _build-fuzz: configure CC=clang --enable-fuzzing; make fuzz (400 000 inputs, seed 1) ==="
    mkdir -p "$top/_build-fuzz"
    (cd "$top/_build-fuzz" && "$top/configure" -q CC=clang --enable-fuzzing &&
        make -s -j"$jobs" && make -s fuzz FUZZ_RUNS=400000 FUZZ_SEED=1 FUZZ_SECONDS=600)
else
    echo "=== clang not installed: fuzzing skipped ==="
fi
echo "=== _build-werror: make docs (Doxygen warnings are errors) ==="
(cd _build-werror && make -s docs)
echo "=== _build-werror: make distcheck ==="
(cd _build-werror && make -s -j"$jobs" distcheck)
# One closing line over every build: each test program's verdict (a Check
# program's own summary is in its .log) counted once per build it ran in.
passed=$(cat _build-*/tests/*.trs _build-*/tests/*/*.trs 2>/dev/null | grep -c '^:test-result: PASS' || true)
failed=$(cat _build-*/tests/*.trs _build-*/tests/*/*.trs 2>/dev/null | grep -c '^:test-result: \(FAIL\|ERROR\)' || true)
skipped=$(cat _build-*/tests/*.trs _build-*/tests/*/*.trs 2>/dev/null | grep -c '^:test-result: SKIP' || true)
echo "tests/all.sh: all passed"
echo "$passed passed, $failed failed, $skipped skipped"
