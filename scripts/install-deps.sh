#!/bin/sh
# Install what building and testing shmds needs on Debian 12 (run as root).
# Optional extras for benchmarks: libboost-dev liblmdb-dev.
# Documentation and the Python binding: doxygen (make docs, section-3
# manual pages), man-db (reading them), python3 and python3-pytest (the
# binding and its tests), gnuplot-nox (make bench's plots).
# contrib/redis (libshmds-redis) needs libhiredis-dev; its tests and
# benchmark run a redis-server of their own.
set -e
export DEBIAN_FRONTEND=noninteractive
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends \
    build-essential autoconf automake libtool pkg-config check \
    clang libclang-rt-14-dev valgrind libboost-dev liblmdb-dev \
    doxygen man-db python3 python3-pytest gnuplot-nox \
    libhiredis-dev redis-server
