"""trocr-serve's own checks before a server starts."""

from __future__ import annotations

import logging

import pytest

from trocr_serving.launcher import cli


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("::", False),
        ("trocr.internal", False),
    ],
)
def test_which_addresses_stay_on_this_machine(host, loopback):
    assert cli.is_loopback(host) is loopback


def test_the_pip_server_on_a_public_address_says_once_that_it_is_not_for_production(tmp_path, caplog):
    """A repository that does not exist fails before any server starts; the warning comes first, once."""
    with caplog.at_level(logging.WARNING):
        assert cli.main(["--model-repository", str(tmp_path / "none"), "--host", "0.0.0.0"]) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("CVE-2026-47627" in w and "deploy/docker" in w for w in warnings) == 1


def test_the_pip_server_on_loopback_does_not_warn(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert cli.main(["--model-repository", str(tmp_path / "none"), "--host", "127.0.0.1"]) == 1
    assert not any("CVE" in r.getMessage() for r in caplog.records)
