"""Settings: a secret file that is not text is a readable configuration error."""

from __future__ import annotations

import pytest

from onechance.config import ConfigError, load_settings


def test_a_secret_file_that_is_not_utf8_is_a_config_error(tmp_path, monkeypatch):
    bad = tmp_path / "secret"
    bad.write_bytes(b"\xff\xfe\x00binary")
    monkeypatch.setenv("ONECHANCE_AMI__HOST", "pbx.example")
    monkeypatch.setenv("ONECHANCE_AMI__SECRET_FILE", str(bad))
    settings = load_settings()
    with pytest.raises(ConfigError, match="not UTF-8"):
        settings.pbxs()[0].resolved_secret()


def test_the_secret_file_is_read_and_stripped(tmp_path, monkeypatch):
    good = tmp_path / "secret"
    good.write_text("hunter2\n")
    monkeypatch.setenv("ONECHANCE_AMI__SECRET_FILE", str(good))
    assert load_settings().ami.resolved_secret() == "hunter2"
