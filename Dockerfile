# sse-tui: load generator and live terminal monitor for the SSE token system.
#
#   docker build -t sse-tui:latest .
#   kubectl run loadtest --rm -it --restart=Never --image=sse-tui:latest -- \
#     -mode both -redis redis.redis-system:6379 -sse http://sse-adapter.sse-system:80 \
#     -conversations 50 -tokens 100 -duration 5m
#
# Interactive TUI when a TTY is attached (-it), headless output otherwise (Jobs, pipes).
# tests/test_container_recipe.py replays the build stage below in a clean venv, since
# the CI machines have no Docker engine: keep its RUN lines plain shell.

# ---- build: a self-contained virtualenv in /opt/sse-tui --------------------------------
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/sse-tui
WORKDIR /build

# Dependencies from pyproject.toml alone, in their own layer: editing sse_tui/ does not
# reinstall them. (All of them ship wheels for CPython 3.11 on amd64 and arm64.)
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" > requirements.txt \
    && /opt/sse-tui/bin/pip install --no-cache-dir -r requirements.txt

# The package itself, without touching the dependencies installed above.
COPY README.md ./
COPY sse_tui/ sse_tui/
RUN /opt/sse-tui/bin/pip install --no-cache-dir --no-deps . \
    && /opt/sse-tui/bin/sse-tui --help > /dev/null

# ---- runtime: the slim base plus the virtualenv, nothing from the build ----------------
FROM python:3.11-slim

# TERM: `kubectl run -it` often arrives without one; Textual needs it for colours and keys.
ENV PATH=/opt/sse-tui/bin:$PATH \
    TERM=xterm-256color \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --gid 10001 sse-tui \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin sse-tui

COPY --from=build /opt/sse-tui /opt/sse-tui

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /home/sse-tui

# /metrics when run with --metrics-port 9464 (the Jobs' scrape port; docs/metrics.md).
EXPOSE 9464

ENTRYPOINT ["sse-tui"]
