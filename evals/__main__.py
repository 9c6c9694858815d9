"""`python -m evals`: the scoring command. It lives in jobs/evaluate.py with the other command lines (evals itself
is a library that depends only on the output rows); this launcher keeps the short name working."""

import sys

from jobs.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
