"""`python -m jobs.bench`: our generation against transformers' on the same weights (benchmarks/generate.py)."""

from benchmarks.generate import main

if __name__ == "__main__":
    main()
