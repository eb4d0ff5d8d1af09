"""What every benchmark shares: timing in turns, the machine, comparisons with a baseline, the
command line and the processes benchmarked programs run in."""
