"""`make bench`: run every benchmark; each writes its section of bench/RESULTS.md."""

from bench import chips

for benchmark in (chips,):
    benchmark.main()
