#!/bin/sh
# bench/plot.sh DIR: draw every benchmark table DIR/NAME.dat (bench/data.h)
# into DIR/NAME.png with gnuplot: one group of bars per workload, one bar
# per implementation (shmds first), the machine under the title.
set -eu
dir=$1
gnuplot=${GNUPLOT:-gnuplot}
found=0
for dat in "$dir"/*.dat; do
    [ -f "$dat" ] || continue
    found=1
    png=${dat%.dat}.png
    field() { sed -n "s/^# $1: //p" "$dat" | head -n 1; }
    title=$(field title) unit=$(field unit) scale=$(field scale) machine=$(field machine)
    # Implementations: the quoted names on the header row.
    n=$(grep -v '^#' "$dat" | head -n 1 | tr -cd '"' | wc -c)
    n=$((n / 2))
    if [ "$scale" = log ]; then yscale="set logscale y; set yrange [*:*]"; else yscale="set yrange [0:*]"; fi
    "$gnuplot" <<GNUPLOT
set terminal pngcairo size 1000,560 noenhanced font "DejaVu Sans,11"
set output '$png'
set title "$title\n$machine" font ",12"
set ylabel "$unit"
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.9 border rgb "#333333"
set boxwidth 0.9
set key below horizontal autotitle columnheader
set grid ytics lc rgb "#dddddd"
set border 3
set xtics nomirror scale 0
set ytics nomirror
$yscale
set linetype 1 lc rgb "#d62728"
set linetype 2 lc rgb "#1f77b4"
set linetype 3 lc rgb "#2ca02c"
set linetype 4 lc rgb "#9467bd"
set linetype 5 lc rgb "#8c564b"
set linetype 6 lc rgb "#7f7f7f"
# Each bar's figure above it: in a clustered histogram, row r's bar j
# (of n, gap 1) is centred at r + (j - (n - 1) / 2.0) / (n + 1).
fmt(v) = v >= 100 ? sprintf("%.0f", v) : v >= 10 ? sprintf("%.1f", v) : sprintf("%.2g", v)
plot for [i=2:$((n + 1))] '$dat' using i:xtic(1), \
     for [i=2:$((n + 1))] '$dat' using (\$0 + (i - 2 - ($n - 1) / 2.0) / ($n + 1)):i:(fmt(column(i))) \
         with labels offset 0,0.6 font ",9" notitle
GNUPLOT
    echo "bench/plot.sh: $png"
done
[ "$found" -eq 1 ] || { echo "bench/plot.sh: no .dat files in $dir" >&2; exit 1; }
