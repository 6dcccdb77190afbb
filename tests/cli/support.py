"""Running the CLI in a subprocess and checking its one-line errors."""

import importlib
import os
import subprocess
import sys


def qwen_vl(*args, stdin=None, env=None):
    """Run the CLI; output decoded without newline translation (a model may emit a bare \\r)."""
    cmd = [sys.executable, "-m", "qwen_vl.cli", *map(str, args)]
    result = subprocess.run(
        cmd, input=stdin and stdin.encode(), capture_output=True, timeout=120, env={**os.environ, **(env or {})}
    )
    result.stdout, result.stderr = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    return result


def assert_clean_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    assert line, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def exit_code_of_main(module: str, argv: list[str]) -> int:
    """Call `module`.main(argv) in-process; its exit code whether it returns it or raises SystemExit."""
    main = importlib.import_module(module).main
    try:
        return main(argv)  # some mains turn the parser's exit into their return code
    except SystemExit as stop:
        return stop.code
