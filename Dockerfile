# rollbackd: the canary/rollback daemon for Cloud Run.
#   docker build -t rollbackd .
#   docker run -v $PWD/config.yaml:/etc/rollbackd/config.yaml rollbackd
# On Cloud Run: see docs/deploy.md (min-instances=1, CPU always allocated).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package needs (tests and benchmarks stay out). tests/packaging/test_dockerfile.py
# carries out these steps in a fresh venv, since CI has no Docker engine.
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY detectors ./detectors
COPY policies ./policies
COPY actions ./actions
COPY simulations ./simulations
RUN pip install . && rm -rf /src

# A non-root user owns the journal directory; nothing else is writable.
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/rollbackd rollbackd
USER 10001
WORKDIR /var/lib/rollbackd
ENV ROLLBACKD_JOURNAL=/var/lib/rollbackd/journal.jsonl \
    ROLLBACKD_HTTP_PORT=8080

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ROLLBACKD_HTTP_PORT', '8080'), timeout=3)"

ENTRYPOINT ["rollbackd", "run"]
CMD ["--config", "/etc/rollbackd/config.yaml"]
