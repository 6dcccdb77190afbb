"""`python -m qwen_vl.eval ...` (and `accelerate launch -m qwen_vl.eval ...`): the same as `qwen-vl eval ...`."""

import sys

from qwen_vl.eval.runner import main

if __name__ == "__main__":
    sys.exit(main())
