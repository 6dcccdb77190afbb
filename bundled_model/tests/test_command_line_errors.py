"""The recipe's commands' bad arguments: one `error:` line on stderr and exit code 2, no usage block."""

import pytest

from tests.cli.support import exit_code_of_main

COMMANDS = [
    "bundled_model.pretrain_llm",
    "bundled_model.pretrain_reading",
    "bundled_model.pretrain_vision",
    "bundled_model.video_time",
    "bundled_model.synthetic",
    "bundled_model.install",
]


@pytest.mark.parametrize("module", COMMANDS)
@pytest.mark.parametrize("argv", [["--no-such-flag"], []], ids=["unknown flag", "nothing"])
def test_bad_arguments_are_one_error_line(module, argv, capsys):
    code = exit_code_of_main(module, argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err
