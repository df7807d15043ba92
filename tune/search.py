"""`python tune/search.py ...`: the hyper-parameter search, the same command as `taxoclass search ...`.

A thin entry point kept where the README and the cluster instructions name it; the code is the
`taxoclass.search` package (installed with taxoclass: `make setup`, or `pip install -e .`).
"""

import sys

from taxoclass.search.flags import main

if __name__ == "__main__":
    sys.exit(main())
