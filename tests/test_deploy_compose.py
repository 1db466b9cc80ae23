"""docker-compose.yml and the Dockerfile: the compose file is valid for docker-compose 1.29 (with and
without the ``asterisk`` profile), everything it mounts from the repository exists, every host name in
the services' URLs is one of its services, published ports are unique and are the ports the services
listen on, and the image installs onechance the way README.md says and answers its HEALTHCHECK.

No container engine runs here: ``docker-compose config`` (the real docker-compose 1.29 of Debian) is as
far as compose goes; the Dockerfile's install and health check are exercised without Docker.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from onechance.config import Settings

from .daemonproc import daemon

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
#: what .env provides in a real installation (deploy/compose.env.example lists the same names)
DOTENV = {
    "PBX_HOST": "10.0.0.5",
    "ONECHANCE_AMI_SECRET": "amisecret",
    "ONECHANCE_HTTP_TOKEN": "apitoken",
    "POSTGRES_PASSWORD": "pgpassword",
    "GRAFANA_ADMIN_PASSWORD": "gfpassword",
}
BASE_SERVICES = {"onechance", "postgres", "prometheus", "alertmanager", "grafana"}


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: install the Debian package {package} (.ci/install-debian-deps does)")
    return path


def load_yaml(text: str) -> Any:
    """Parse YAML with the interpreter and PyYAML docker-compose itself runs on (Debian's docker-compose
    depends on python3-yaml; the project venv has no YAML library)."""
    compose = Path(tool("docker-compose", "docker-compose"))
    shebang = compose.read_text(encoding="utf-8", errors="replace").splitlines()[0]
    python = shebang[2:].strip().split()[0] if shebang.startswith("#!") else "python3"
    r = subprocess.run(
        [python, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=text, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, f"cannot parse YAML with {python} (python3-yaml): {r.stderr}"
    return json.loads(r.stdout)


def compose_config(tmp_path: Path, *profiles: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` in a clean environment: only PATH, HOME and ``env`` (an empty --env-file,
    so a developer's .env does not leak in)."""
    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    args = [tool("docker-compose", "docker-compose"), "--env-file", str(empty), "-f", str(COMPOSE)]
    for p in profiles:
        args += ["--profile", p]
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **env}
    return subprocess.run([*args, "config"], capture_output=True, text=True, cwd=ROOT, env=clean, timeout=120)


def config(tmp_path: Path, *profiles: str, **env: str) -> dict[str, Any]:
    r = compose_config(tmp_path, *profiles, **{**DOTENV, **env})
    assert r.returncode == 0, r.stderr
    return load_yaml(r.stdout)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def flag(service: dict[str, Any], name: str) -> str | None:
    for arg in service.get("command") or []:
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def port_of(listen: str) -> int:
    return int(listen.rpartition(":")[2])


# ---- the Dockerfile -------------------------------------------------------------------------------------
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile():
        if word == "ENV":
            for item in shlex.split(rest):
                k, _, v = item.partition("=")
                env[k] = v
    return env


def instruction(word: str) -> list[str]:
    return [rest for w, rest in dockerfile() if w == word]


def test_dockerfile_basics():
    assert instruction("FROM") == ["python:3.11-slim-bookworm"]
    user = instruction("USER")
    assert user and user[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    assert json.loads(instruction("ENTRYPOINT")[-1]) == ["onechance"]
    assert json.loads(instruction("CMD")[-1]) == ["run"]
    env = docker_env()
    assert env["ONECHANCE_HTTP__LISTEN"].startswith("0.0.0.0:"), "inside the container: every interface"
    assert instruction("EXPOSE") == [str(port_of(env["ONECHANCE_HTTP__LISTEN"]))]
    volumes = json.loads(instruction("VOLUME")[-1])
    assert env["ONECHANCE_DATA_DIR"] in volumes, "the data directory must be a volume"
    assert instruction("HEALTHCHECK") and "/healthz" in instruction("HEALTHCHECK")[-1]
    assert "curl" not in instruction("HEALTHCHECK")[-1] and "wget" not in instruction("HEALTHCHECK")[-1]


def pip_install_steps(text: str) -> list[str]:
    return [" ".join(m.group(0).split()) for m in re.finditer(r"pip install(?: [^\s&;`|]+)*", text)]


def test_dockerfile_installs_the_way_the_readme_says():
    runs = " ".join(instruction("RUN"))
    docker_steps = pip_install_steps(runs)
    assert docker_steps == ["pip install ."], docker_steps
    for doc in (ROOT / "README.md", ROOT / "docs" / "install.md"):
        assert "pip install ." in pip_install_steps(doc.read_text(encoding="utf-8")), f"{doc.name} says otherwise"


def test_the_files_the_dockerfile_copies_build_the_whole_package(tmp_path):
    """Build a wheel from exactly what the Dockerfile COPYs (as `pip install .` does inside it): the
    wheel holds every module and data file of the source tree, and the `onechance` entry point."""
    src = tmp_path / "src"
    src.mkdir()
    for rest in instruction("COPY"):
        *sources, _dest = rest.split()
        for s in sources:
            p = ROOT / s
            assert p.exists(), f"COPY {s}: not in the repository"
            if p.is_dir():
                shutil.copytree(p, src / s, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy2(p, src / s)
    out = tmp_path / "wheel"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = out.glob("onechance-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    pkg = ROOT / "service"
    wanted = {
        p.relative_to(pkg).as_posix()
        for p in pkg.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p) and p.suffix != ".pyc"
    }
    assert wanted - names == set(), "files of the source tree missing from the image's install"
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "onechance = onechance.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def healthcheck_argv() -> list[str]:
    hc = instruction("HEALTHCHECK")[-1]
    exec_form = hc[hc.index("CMD") + 3 :].strip()
    argv = json.loads(exec_form)
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_the_healthcheck_passes_against_a_running_daemon_and_fails_without_one():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECHANCE_")}
    argv = healthcheck_argv()
    closed = free_port()
    r = subprocess.run(argv, env={**env, "ONECHANCE_HTTP__LISTEN": f"0.0.0.0:{closed}"},
                       capture_output=True, timeout=30)
    assert r.returncode != 0, "the health check passed with nothing listening"
    async with daemon(command="demo", ONECHANCE_DEMO__SPEED="0") as d:  # the demo: no PBX needed
        r = subprocess.run(argv, env={**env, "ONECHANCE_HTTP__LISTEN": f"0.0.0.0:{d.port}"},
                           capture_output=True, text=True, timeout=30)
        await d.stop()
    assert r.returncode == 0, r.stderr


# ---- docker-compose.yml --------------------------------------------------------------------------------
def test_compose_config_is_valid_with_and_without_the_asterisk_profile(tmp_path):
    """docker-compose 1.29 lists profile services in `config` either way; `up` starts a service with
    `profiles` only when one of them is given, so plain `up` starts the base services alone."""
    for profiles in ((), ("asterisk",)):
        services = config(tmp_path, *profiles, PBX_HOST="asterisk")["services"]
        assert set(services) == BASE_SERVICES | {"asterisk"}
        assert services["asterisk"]["profiles"] == ["asterisk"]
        assert [n for n, s in services.items() if s.get("profiles")] == ["asterisk"]
    r = compose_config(tmp_path, **DOTENV)
    listed = subprocess.run([*r.args[:-1], "config", "--profiles"], capture_output=True, text=True, cwd=ROOT,
                            env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **DOTENV}, timeout=120)
    assert listed.returncode == 0 and listed.stdout.split() == ["asterisk"], listed.stderr


def test_compose_refuses_to_run_without_the_secrets(tmp_path):
    for missing in DOTENV:
        r = compose_config(tmp_path, **{k: v for k, v in DOTENV.items() if k != missing})
        assert r.returncode != 0 and missing in r.stderr, (missing, r.stderr)


def test_secrets_reach_the_services_and_stay_out_of_the_compose_file(tmp_path):
    text = COMPOSE.read_text(encoding="utf-8")
    services = config(tmp_path)["services"]
    for secret in ("amisecret", "apitoken", "pgpassword", "gfpassword"):
        assert secret not in text
    one = env_of(services["onechance"])
    assert one["ONECHANCE_AMI__SECRET"] == "amisecret" and one["ONECHANCE_HTTP__TOKEN"] == "apitoken"
    assert env_of(services["postgres"])["POSTGRES_PASSWORD"] == "pgpassword"
    assert env_of(services["grafana"])["GF_SECURITY_ADMIN_PASSWORD"] == "gfpassword"
    example = (ROOT / "deploy" / "compose.env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^([A-Z_]+)=", example, re.M))
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert required == set(DOTENV) and required <= documented
    assert set(re.findall(r"\$\{([A-Z_]+)", text)) <= documented, "every variable is in compose.env.example"


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    out = []
    for v in service.get("volumes") or []:
        source, _, rest = v.partition(":") if isinstance(v, str) else (v["source"], ":", v["target"])
        if source.startswith("/"):
            out.append((Path(source), rest.split(":")[0]))
    return out


def test_everything_mounted_from_the_repository_exists(tmp_path):
    services = config(tmp_path, "asterisk", PBX_HOST="asterisk")["services"]
    mounts = [(name, src, dst) for name, s in services.items() for src, dst in bind_mounts(s)]
    assert len(mounts) >= 12
    for name, src, _dst in mounts:
        assert src.is_relative_to(ROOT), f"{name} mounts {src}, outside the repository"
        assert src.exists(), f"{name} mounts {src.relative_to(ROOT)}, which does not exist"
    targets = {dst for _n, _s, dst in mounts}
    one = env_of(services["onechance"])
    assert one["ONECHANCE_CONFIG"] in targets
    prom = services["prometheus"]
    assert flag(prom, "--config.file") in targets
    am = services["alertmanager"]
    assert flag(am, "--config.file") in targets

    # onechance accepts the settings file with the environment the image and compose give it
    src = next(s for n, s, d in mounts if d == one["ONECHANCE_CONFIG"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECHANCE_")}
    env.update(docker_env())
    env.update(one)
    env["ONECHANCE_CONFIG"] = str(src)
    r = subprocess.run([sys.executable, "-m", "onechance.cli", "check-config"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    effective = json.loads(r.stdout)
    assert effective["ami"]["host"] == "asterisk" and effective["ami"]["secret"] == "********"
    assert effective["http"]["listen"] == docker_env()["ONECHANCE_HTTP__LISTEN"]
    assert effective["database"]["url"] == "postgresql+asyncpg://onechance:********@postgres:5432/onechance"
    assert "amisecret" not in r.stdout and "pgpassword" not in r.stdout


def test_the_demo_asterisk_includes_the_sample_manager_user(tmp_path):
    services = config(tmp_path, "asterisk", PBX_HOST="asterisk")["services"]
    mounts = {dst: src for src, dst in bind_mounts(services["asterisk"])}
    main = mounts["/etc/asterisk/manager.conf"].read_text(encoding="utf-8")
    for include in re.findall(r'^#include\s+"?([^"\s]+)"?', main, re.M):
        assert f"/etc/asterisk/{include}" in mounts, f"manager.conf includes {include}, which is not mounted"
        assert mounts[f"/etc/asterisk/{include}"] == ROOT / "asterisk-conf" / "manager.conf"
    assert "[general](+)" in main and "[onechance](+)" in main  # adds to the sample, does not replace it
    for conf in ("queues.conf", "extensions.conf", "logger.conf"):
        assert f"/etc/asterisk/{conf}" in mounts


def test_every_host_in_the_services_urls_is_a_compose_service(tmp_path):
    services = config(tmp_path, "asterisk", PBX_HOST="asterisk")["services"]
    names = set(services)
    one = env_of(services["onechance"])
    db = urlsplit(one["ONECHANCE_DATABASE__URL"])
    assert db.hostname in names and db.hostname == "postgres"
    assert one["ONECHANCE_AMI__HOST"] in names  # with the profile and PBX_HOST=asterisk
    prom = load_yaml((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    targets += [t for am in prom["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert "onechance:9648" in targets
    for t in targets:
        assert t.rpartition(":")[0] in names, f"prometheus.yml target {t} is not a compose service"
    ds = load_yaml((ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    for source in ds["datasources"]:
        assert urlsplit(source["url"]).hostname in names, source["url"]


def listen_ports(services: dict[str, Any]) -> dict[str, int]:
    """The port each published service listens on inside its container, from its own configuration."""
    return {
        "onechance": port_of(env_of(services["onechance"]).get("ONECHANCE_HTTP__LISTEN")
                             or docker_env()["ONECHANCE_HTTP__LISTEN"]),
        "prometheus": port_of(flag(services["prometheus"], "--web.listen-address") or ":9090"),
        "alertmanager": port_of(flag(services["alertmanager"], "--web.listen-address") or ":9093"),
        "grafana": int(env_of(services["grafana"]).get("GF_SERVER_HTTP_PORT", "3000")),
        "postgres": int(env_of(services["postgres"]).get("PGPORT", "5432")),
    }


def published(service: dict[str, Any]) -> list[tuple[str, int, int, str]]:
    """(host ip, host port, container port, protocol) of each published port."""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), int(p["published"]), int(p["target"]), p.get("protocol", "tcp")))
            continue
        spec, _, proto = str(p).partition("/")
        parts = spec.split(":")
        ip = parts[0] if len(parts) == 3 else ""
        out.append((ip, int(parts[-2]), int(parts[-1]), proto or "tcp"))
    return out


def test_published_ports_are_unique_and_are_what_the_services_listen_on(tmp_path):
    services = config(tmp_path, "asterisk", PBX_HOST="asterisk")["services"]
    listen = listen_ports(services)
    seen: dict[tuple[int, str], str] = {}
    for name, s in services.items():
        for ip, host_port, container_port, proto in published(s):
            assert (host_port, proto) not in seen, f"{name} and {seen[(host_port, proto)]} publish {host_port}"
            seen[(host_port, proto)] = name
            assert name in listen, f"{name} publishes a port but nothing says what it listens on"
            assert container_port == listen[name], f"{name} publishes {container_port}, listens on {listen[name]}"
            assert ip == "127.0.0.1", f"{name}: published on {ip or 'every address'} by default"
    assert set(seen.values()) == {"onechance", "prometheus", "alertmanager", "grafana"}
    # and the URLs between services use those ports
    one = env_of(services["onechance"])
    assert urlsplit(one["ONECHANCE_DATABASE__URL"]).port == listen["postgres"]
    assert f"-p {listen['postgres']}" in " ".join(services["postgres"]["healthcheck"]["test"])
    prom = load_yaml((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    targets += [t for am in prom["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    for t in targets:
        host, _, port = t.rpartition(":")
        assert int(port) == listen[host], f"prometheus.yml: {t}, but {host} listens on {listen[host]}"
    ds = load_yaml((ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    for source in ds["datasources"]:
        u = urlsplit(source["url"])
        assert u.port == listen[u.hostname], source["url"]


def test_bind_address_moves_every_published_port(tmp_path):
    services = config(tmp_path, BIND_ADDRESS="192.0.2.10")["services"]
    ips = {ip for s in services.values() for ip, *_ in published(s)}
    assert ips == {"192.0.2.10"}


def test_onechance_stops_gracefully_and_waits_for_postgres(tmp_path):
    services = config(tmp_path)["services"]
    one = services["onechance"]
    grace = one["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > Settings().daemon.shutdown_timeout
    assert one["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["postgres"]["image"].startswith("postgres:15")
