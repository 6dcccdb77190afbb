"""Errors a user can cause. Each carries one line that names the input and the reason;
the CLI and the app print that line (no traceback) and the CLI exits with code 2."""

import argparse


class QwenVLError(Exception):
    """Base of every error caused by user input rather than by a bug."""


class MediaError(QwenVLError):
    """An image or video that cannot be read or used (missing, empty, corrupt, absurd size)."""


class CheckpointError(QwenVLError):
    """A model directory that is missing files, holds corrupt files or an unsupported config."""


class PromptTooLongError(QwenVLError):
    """A prompt (with its vision tokens) longer than the model's context."""


class OptionError(QwenVLError, ValueError):
    """An option value outside its range (sampling settings, pixel budgets, frame rates)."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose bad arguments are one `error:` line on stderr and exit code 2,
    not argparse's usage block (every command's --help still prints the usage)."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")
