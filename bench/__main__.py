"""``python -m bench KIND JOB RESULT``: one child measurement of the benchmark, in a fresh interpreter."""

from __future__ import annotations

import sys

from bench import child_main

if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
