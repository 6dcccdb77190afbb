"""`python -m eval ...` (and `accelerate launch -m eval ...`): the same as `qwen-vl eval ...`."""

import sys

from eval.runner import main

if __name__ == "__main__":
    sys.exit(main())
