"""Every command's bad arguments: one `error:` line on stderr and exit code 2, no usage block."""

import pytest

from tests.cli.support import exit_code_of_main

COMMANDS = [
    "qwen_vl.eval.runner",
    "qwen_vl.eval.compare",
    "qwen_vl.training.train",
]  # the web app's flags: tests/app/test_chat.py


@pytest.mark.parametrize("module", COMMANDS)
@pytest.mark.parametrize("argv", [["--no-such-flag"], []], ids=["unknown flag", "nothing"])
def test_bad_arguments_are_one_error_line(module, argv, capsys):
    code = exit_code_of_main(module, argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err
