"""`python -m jobs.bench`: our generation against transformers' on the same weights (benchmarks/generation_speed.py).

Kept under jobs/ because users' scripts call it by this name; the benchmark itself lives with the others.
"""

from benchmarks.generation_speed import main

if __name__ == "__main__":
    main()
