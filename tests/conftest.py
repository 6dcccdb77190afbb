"""Shared test set-up: tests import their helpers as `tests.tiny` and `tests.app.support`."""
