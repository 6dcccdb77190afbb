"""qwen-vl web app: `python app.py [--model DIR] [--port N] ...` (see docs/app.md)."""

from qwen_vl.webapp.server import main

if __name__ == "__main__":
    raise SystemExit(main())
