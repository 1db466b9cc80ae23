"""Settings: secret files, plain names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from onechance.config import ConfigError, Settings, load_settings


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


@pytest.mark.parametrize("where", ["ami", "pbx", "channel"])
@pytest.mark.parametrize("name, ok", [("tartu-1.main_b", True), ("a b", False), ("", False), ("x/y", False)])
def test_pbx_and_channel_names_are_plain(where, name, ok):
    """A PBX's name is a metric label and part of ids, a channel's is in metrics and URLs: plain names only."""
    kw: dict[str, object] = {
        "ami": {"ami": {"name": name, "host": "127.0.0.1"}},
        "pbx": {"pbx": [{"name": name, "host": "127.0.0.1"}]},
        "channel": {"alerts": {"channels": [{"name": name, "kind": "webhook", "url": "http://127.0.0.1:9/"}]}},
    }[where]
    if ok:
        Settings(**kw)
    else:
        with pytest.raises(ValidationError, match=r"must be letters, digits, '-', '_' or '\.'"):
            Settings(**kw)
