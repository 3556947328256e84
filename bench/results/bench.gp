# Written by `tutorwatch bench --plot`; run `gnuplot bench.gp` here to draw again.
set terminal pngcairo size 1000,560 font 'sans,10'
set datafile separator '\t'
set output 'throughput.png'
set title 'tutorwatch: throughput by stage (events/s)'
set style fill solid 0.7
set boxwidth 0.6
set grid ytics
set yrange [0:*]
set xtics rotate by -25 left noenhanced
set format y '%.1s%c'
set bmargin 10
set rmargin 28
plot 'throughput.dat' using 0:2:xtic(1) with boxes notitle, \
     '' using 0:2:(sprintf('%.2fx', $3)) with labels offset 0,1 notitle
set output 'latency.png'
set title 'tutorwatch: send to alert latency over ZeroMQ tcp (intended send time)'
set style fill empty
set xtics norotate
set bmargin
set rmargin
set logscale y
set yrange [*:*]
set format y '%g'
set ylabel 'ms'
set xlabel 'offered rate, events/s'
set key top left
set offsets 0.25, 0.25, 0, 0
plot 'latency.dat' using 0:2:xtic(1) with linespoints title 'p50', \
     '' using 0:3 with linespoints title 'p99', \
     '' using 0:4 with linespoints title 'p99.9', \
     '' using 0:5 with linespoints title 'max'
