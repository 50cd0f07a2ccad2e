#!/bin/sh
# docs/man3.sh SRC DST: pick the section-3 pages to install out of what
# Doxygen made in SRC (GENERATE_MAN, MAN_LINKS) and write them to DST.
#  - a header's page (map.h.3) is installed as shmds_map.h.3 (shmds.h.3
#    stays), so no page takes a name as generic as list.h;
#  - every function, type and macro of the API (shmds_*, SHMDS_*) gets its
#    page: Doxygen's one-line link (".so man3/map.h.3") to its header's
#    page, renamed to match, or the page of a struct;
#  - links for struct members and anonymous enums (next.3, @1.3) are left
#    out: they would shadow other pages.
set -eu
src=$1 dst=$2
mkdir -p "$dst"
page_name() { # header page file name -> installed name
    case $1 in
        shmds.h.3) echo shmds.h.3 ;;
        *.h.3) echo "shmds_$1" ;;
        *) echo "$1" ;;
    esac
}
for f in "$src"/*.3; do
    b=${f##*/}
    case $b in
        *.h.3) cp "$f" "$dst/$(page_name "$b")" ;;
        shmds_*.3 | SHMDS_*.3)
            target=$(sed -n '1s|^\.so man3/||p' "$f")
            if [ -n "$target" ]; then
                echo ".so man3/$(page_name "$target")" >"$dst/$b"
            else
                cp "$f" "$dst/$b"
            fi
            ;;
    esac
done
