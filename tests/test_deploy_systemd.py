"""deploy/systemd/onechance.service: `systemd-analyze verify` accepts it (with ExecStart pointed at this
venv's onechance, since verify needs the binary), it carries the hardening the installer guide
promises, it waits longer than the daemon's drain, and the secrets file it reads is valid for onechance.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from onechance.config import Settings

from .test_deploy_compose import ROOT, tool

UNIT = ROOT / "deploy" / "systemd" / "onechance.service"
ENV_EXAMPLE = ROOT / "deploy" / "systemd" / "onechance.env.example"
EXEC_START = "/opt/onechance/.venv/bin/onechance run --config /etc/onechance/onechance.toml"


def directives(text: str) -> dict[str, list[str]]:
    """Section.Key -> values in order (comments and continuation-free lines only, as in this unit)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def local_unit(tmp_path: Path) -> Path:
    onechance = Path(sys.executable).parent / "onechance"
    assert onechance.is_file(), f"{onechance} missing: install the project into the venv (make venv)"
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(f"ExecStart={EXEC_START}") == 1
    unit = tmp_path / "onechance.service"
    unit.write_text(text.replace("ExecStart=/opt/onechance/.venv/bin/onechance", f"ExecStart={onechance}"),
                    encoding="utf-8")
    return unit


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    unit = local_unit(tmp_path)
    r = subprocess.run([tool("systemd-analyze", "systemd"), "verify", str(unit)], capture_output=True, text=True,
                       timeout=120)
    complaints = [ln for ln in (r.stdout + r.stderr).splitlines() if unit.name in ln or str(tmp_path) in ln]
    assert r.returncode == 0 and complaints == [], r.stdout + r.stderr


def test_systemd_analyze_verify_would_notice_a_broken_unit(tmp_path):
    """The check above can fail: a missing binary and an unknown key are reported."""
    unit = local_unit(tmp_path)
    text = unit.read_text(encoding="utf-8")
    unit.write_text(text.replace("ProtectHome=yes", "ProtectHom=yes"), encoding="utf-8")
    r = subprocess.run([tool("systemd-analyze", "systemd"), "verify", str(unit)], capture_output=True, text=True,
                       timeout=120)
    assert "ProtectHom" in r.stdout + r.stderr
    unit.write_text(text.replace(str(Path(sys.executable).parent / "onechance"), "/nonexistent/onechance"),
                    encoding="utf-8")
    r = subprocess.run([tool("systemd-analyze", "systemd"), "verify", str(unit)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0


def test_the_unit_is_hardened():
    d = directives(UNIT.read_text(encoding="utf-8"))
    s = {k.split(".", 1)[1]: v[-1] for k, v in d.items() if k.startswith("Service.")}
    assert d["Service.ExecStart"] == [EXEC_START]
    assert d["Service.EnvironmentFile"] == ["-/etc/onechance/onechance.env"]
    assert s["DynamicUser"] == "yes" or s.get("User", "root") not in ("root", "0")
    expected = {
        "ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
        "StateDirectory": "onechance", "RuntimeDirectory": "onechance", "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "Restart": "on-failure", "KillSignal": "SIGTERM",
    }
    assert {k: s.get(k) for k in expected} == expected
    assert d["Service.SystemCallFilter"][0] == "@system-service"
    assert all(v.startswith("~") for v in d["Service.SystemCallFilter"][1:]), "later filters may only deny more"
    assert "Service.ReadWritePaths" not in d, "StateDirectory/RuntimeDirectory are the only writable paths"
    assert s["WorkingDirectory"] == "/var/lib/onechance"
    assert "ONECHANCE_DATA_DIR=/var/lib/onechance" in d["Service.Environment"]
    # longer than the daemon's drain (plus the second the HTTP server gets), else systemd kills mid-drain
    assert float(s["TimeoutStopSec"]) > Settings().daemon.shutdown_timeout + 5
    assert s["RestartPreventExitStatus"] == "2", "exit 2 (configuration error) is not worth restarting"


def test_load_credential_is_documented_for_secret_files():
    text = UNIT.read_text(encoding="utf-8")
    assert re.search(r"^#\s*LoadCredential=ami\.secret:/etc/onechance/ami\.secret$", text, re.M)
    assert re.search(r"^#\s*Environment=ONECHANCE_AMI__SECRET_FILE=%d/ami\.secret$", text, re.M)
    guide = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    assert "LoadCredential=ami.secret:/etc/onechance/ami.secret" in guide
    assert "/run/credentials/onechance.service/ami.secret" in guide


def test_the_security_exposure_is_low(tmp_path, capsys):
    unit = local_unit(tmp_path)
    r = subprocess.run([tool("systemd-analyze", "systemd"), "security", "--offline=true", str(unit)],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    with capsys.disabled():
        print(f"\nsystemd-analyze security onechance.service: exposure {m.group(1)} {m.group(2)}")
    assert float(m.group(1)) <= 2.0, r.stdout


def test_the_env_example_is_a_valid_secrets_file_for_onechance(tmp_path):
    """/etc/onechance/onechance.env from the example, with the sample settings file minus its secret_file
    line (install.md, systemd step 3): onechance accepts it and masks the secrets."""
    env_lines = [ln for ln in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")]
    secrets = dict(ln.split("=", 1) for ln in env_lines)
    assert all(re.fullmatch(r"ONECHANCE_[A-Z_]+", k) for k in secrets), secrets
    assert {"ONECHANCE_AMI__SECRET", "ONECHANCE_HTTP__TOKEN"} <= set(secrets)
    sample = (ROOT / "asterisk-conf" / "onechance.toml").read_text(encoding="utf-8")
    toml = tmp_path / "onechance.toml"
    toml.write_text("\n".join(ln for ln in sample.splitlines() if not ln.startswith("secret_file")), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECHANCE_")}
    env.update(secrets)
    env["ONECHANCE_DATA_DIR"] = str(tmp_path / "data")
    r = subprocess.run([sys.executable, "-m", "onechance.cli", "check-config", "--config", str(toml)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    effective = json.loads(r.stdout)
    assert effective["ami"]["secret"] == "********" and effective["http"]["token"] == "********"
    assert all(v not in r.stdout for v in secrets.values())
