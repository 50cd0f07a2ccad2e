#!/bin/sh
# debian_index.sh OUT.tsv: the machine's Debian package index (the apt
# lists' main Packages file) as "package<TAB>version size description"
# lines, for bench_table. Exit 1 (nothing written) when there is none.
set -u
out=$1
# The largest list first: the release's main archive, not its updates.
for f in $(ls -S /var/lib/apt/lists/*_dists_*_main_binary-*_Packages* 2>/dev/null); do
    [ -r "$f" ] || continue
    case $f in
        *.lz4) cat="lz4cat" ;;
        *.gz) cat="zcat" ;;
        *.xz) cat="xzcat" ;;
        *Packages) cat="cat" ;;
        *) continue ;;
    esac
    command -v "$cat" >/dev/null 2>&1 || continue
    "$cat" "$f" | awk '
        /^Package: /     { p = $2 }
        /^Version: /     { v = $2 }
        /^Size: /        { s = $2 }
        /^Description: / { d = substr($0, 14) }
        /^$/ { if (p != "") print p "\t" v " " s " " d; p = v = s = d = "" }
        END  { if (p != "") print p "\t" v " " s " " d }' >"$out" && [ -s "$out" ] && exit 0
done
rm -f "$out"
exit 1
