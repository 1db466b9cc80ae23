"""docs/configuration.md is generated from the settings model (onechance.configdoc): it must be up to date, every
setting must be described, and the environment variables it names must be the ones the daemon reads."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from onechance import config as config_module
from onechance.config import Settings, load_settings, unknown_environment
from onechance.configdoc import ConfigDocError, render, tables, undescribed_fields

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"
REGENERATE = "python -m onechance.configdoc --output docs/configuration.md"


def test_docs_configuration_md_is_the_generated_reference():
    generated = render()
    current = REFERENCE.read_text(encoding="utf-8")
    assert current == generated, (
        f"docs/configuration.md differs from the settings model (service/onechance/config.py): regenerate it "
        f"with `.venv/bin/{REGENERATE}` and commit it")


def test_every_setting_has_a_one_line_description():
    assert undescribed_fields() == [], "give these settings Field(description=...) in onechance/config.py"
    for table in tables():
        assert table.description.strip(), table.heading
        for entry in table.entries:
            assert "\n" not in entry.description, f"{entry.key}: one line, please"
            assert not entry.description.endswith("."), f"{entry.key}: no final full stop (house style)"


def test_a_field_without_description_is_caught():
    class Inner(BaseModel):
        described: int = Field(1, description="a count")
        bare: int = 2

    class Outer(BaseModel):
        inner: Inner = Field(Inner(), description="a section")
        plain: str = "x"

    assert sorted(undescribed_fields(Outer)) == ["inner.bare", "plain"]
    with pytest.raises(ConfigDocError, match=r"^plain: no description"):
        render(Outer)

    class Described(BaseModel):
        inner: Inner = Field(Inner(), description="a section")

    with pytest.raises(ConfigDocError, match=r"^inner\.bare: no description"):
        render(Described)


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every leaf setting of the model, by dotted key, written independently of the generator."""
    out = set()
    for name, fld in model.model_fields.items():
        ann = fld.annotation
        args = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _leaf_keys(ann, f"{prefix}{name}.")
        elif args and str(ann).startswith("dict"):
            out |= _leaf_keys(args[0], f"{prefix}{name}.<name>.")
        elif args and str(ann).startswith("list"):
            if name != "pbx":  # [[pbx]] takes the keys of [ami]: documented once
                out |= _leaf_keys(args[0], f"{prefix}{name}[].")
        else:
            out.add(prefix + name)
    return out


def test_every_setting_is_a_row_of_the_reference():
    rows = {e.key for t in tables() for e in t.entries}
    assert rows == _leaf_keys(Settings)
    text = REFERENCE.read_text(encoding="utf-8")
    for key in rows:
        assert f"| `{key}` |" in text, key


def test_the_documented_environment_variables_are_those_the_daemon_reads():
    documented = {e.env for t in tables() for e in t.entries if e.env and "<NAME>" not in e.env}
    sections = {f"ONECHANCE_{name.upper()}" for name, f in Settings.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}
    lists_and_tables = {"ONECHANCE_PBX", "ONECHANCE_QUEUES", "ONECHANCE_ALERTS__HOURS", "ONECHANCE_ALERTS__CHANNELS"}
    assert documented | sections | lists_and_tables == config_module._env_names(Settings, "ONECHANCE_")
    # and none of them draws the unknown-variable warning
    assert unknown_environment(dict.fromkeys(documented, "1")) == []


def test_a_table_of_tables_and_lists_are_read_from_the_environment_as_documented(monkeypatch):
    """The reference's forms, read for real: ONECHANCE_QUEUES__<NAME>__<KEY> (name lowercased), a list as JSON,
    a list of tables as JSON."""
    text = REFERENCE.read_text(encoding="utf-8")
    assert "`ONECHANCE_QUEUES__<NAME>__SHORT_ABANDON_SECONDS`" in text
    assert "names come lowercased from the environment" in text
    monkeypatch.setenv("ONECHANCE_QUEUES__Support__SHORT_ABANDON_SECONDS", "3")
    monkeypatch.setenv("ONECHANCE_JOURNEY__ALERT_KINDS", '["abandoned", "timeout"]')
    monkeypatch.setenv("ONECHANCE_ALERTS__HOURS__OFFICE__MON", '["08:00-17:00"]')
    monkeypatch.setenv("ONECHANCE_PBX", '[{"name": "a", "host": "10.0.0.5", "secret": "x"}]')
    s = load_settings()
    assert s.queues["support"].short_abandon_seconds == 3.0
    assert s.journey.alert_kinds == ["abandoned", "timeout"]
    assert s.alerts.hours["office"].mon == ["08:00-17:00"]
    assert [p.host for p in s.pbx] == ["10.0.0.5"]
    assert unknown_environment() == []


def test_documented_defaults_are_the_models_defaults():
    """Spot checks against a default Settings(), not against the generator's own reading of the model."""
    rows = {e.key: e for t in tables() for e in t.entries}
    s = Settings()
    assert rows["ami.port"].default == f"`{s.ami.port}`"
    assert rows["http.listen"].default == f'`"{s.http.listen}"`'
    assert rows["journey.max_call_age"].default == "`21600.0` (6 h)" and s.journey.max_call_age == 21600.0
    assert rows["database.auto_upgrade"].default == "`true`" and s.database.auto_upgrade is True
    assert rows["data_dir"].default == '`"./data"`' and s.data_dir == Path("./data")
    assert rows["ami.host"].default == "unset" and s.ami.host is None
    assert rows["alerts.channels[].name"].default == "(required)"
    assert rows["ami.port"].constraints == "≥ 1, ≤ 65535"
    assert rows["ami.queue_size"].constraints == "≥ 100"
    assert rows["log_level"].type == "one of `DEBUG`, `INFO`, `WARNING`, `ERROR`"


def test_sample_settings_files_use_only_documented_keys():
    """Every key of the shipped samples is in the reference (the files themselves are validated elsewhere)."""
    import tomllib

    rows = {e.key for t in tables() for e in t.entries}
    ami_keys = {k.removeprefix("ami.") for k in rows if k.startswith("ami.")}

    def keys(data: dict[str, object], prefix: str = "") -> set[str]:
        out = set()
        for k, v in data.items():
            if prefix == "queues.":
                out |= keys(v, "queues.<name>.")  # type: ignore[arg-type]
            elif k == "pbx" and not prefix:
                assert isinstance(v, list)
                out |= {f"ami.{key}" for table in v for key in table}
            elif isinstance(v, dict):
                out |= keys(v, f"{prefix}{k}.")
            else:
                out.add(prefix + k)
        return out

    for sample in ("asterisk-conf/onechance.toml", "deploy/onechance.toml"):
        data = tomllib.loads((ROOT / sample).read_text(encoding="utf-8"))
        found = keys(data)
        assert found, sample
        assert found <= rows, (sample, found - rows)
        assert ami_keys  # [[pbx]] keys are checked against [ami]'s


def test_the_check_command_says_how_to_regenerate(tmp_path):
    good = tmp_path / "configuration.md"
    assert subprocess.run([sys.executable, "-m", "onechance.configdoc", "--output", str(good)],
                          capture_output=True, text=True, timeout=60).returncode == 0
    assert good.read_text(encoding="utf-8") == render()
    ok = subprocess.run([sys.executable, "-m", "onechance.configdoc", "--check", str(good)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    good.write_text(render().replace("`5038`", "`5039`"), encoding="utf-8")
    stale = subprocess.run([sys.executable, "-m", "onechance.configdoc", "--check", str(good)],
                           capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1
    assert re.search(r"out of date .*python -m onechance\.configdoc --output ", stale.stderr), stale.stderr
    missing = subprocess.run([sys.executable, "-m", "onechance.configdoc", "--check", str(tmp_path / "nope.md")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "nope.md" in missing.stderr
