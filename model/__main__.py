"""`python -m model`: the single-image command. It lives in jobs/predict.py, above tasks and decoders, since the
network itself knows nothing of tasks; this launcher only keeps the short name working."""

import sys

from jobs.predict import main

if __name__ == "__main__":
    sys.exit(main())
