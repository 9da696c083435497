"""Side-by-side benchmarks: each script measures two things in one run and prints their ratio.

The last line of every script's output is `RATIO <name> = <value>`; see bench/README.md.
"""
