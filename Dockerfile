# onechance in a container: `docker build -t onechance .` then see docker-compose.yml and docs/install.md.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The source tree, installed the way README.md says: pip install . (every dependency has a wheel for
# CPython 3.11 on x86-64 and arm64, so no compiler is needed), then the sources are dropped.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install . && rm -rf /src

# A dedicated unprivileged user owns the data directory (SQLite database and the store spool).
RUN groupadd --system --gid 10001 onechance \
    && useradd --system --uid 10001 --gid onechance --home-dir /var/lib/onechance --no-create-home \
       --shell /usr/sbin/nologin onechance \
    && install -d -o onechance -g onechance -m 0750 /var/lib/onechance
WORKDIR /var/lib/onechance

# Inside the container the HTTP server (/metrics, /healthz, /readyz, /api) listens on every interface;
# publish the port only where it should be reachable (docker-compose.yml binds it to 127.0.0.1).
ENV ONECHANCE_DATA_DIR=/var/lib/onechance \
    ONECHANCE_HTTP__LISTEN=0.0.0.0:9648
VOLUME ["/var/lib/onechance"]
EXPOSE 9648

USER onechance:onechance

# /healthz answers {"status": "ok"} while the process runs (no curl in the slim image: Python does it);
# the port follows ONECHANCE_HTTP__LISTEN when that is overridden.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('ONECHANCE_HTTP__LISTEN', '0.0.0.0:9648').rpartition(':')[2]; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]

# SIGTERM (docker stop) drains gracefully within daemon.shutdown_timeout (10 s by default): give
# `docker stop -t 20` or compose's stop_grace_period room for it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["onechance"]
CMD ["run"]
