# syntax=docker/dockerfile:1
# One image for the three roles of wasp: `wasp operator`, `wasp master`,
# `wasp worker` (the operator starts workers with this same image).
#
# The builder turns the project and every dependency into wheels; the final
# stage installs them offline from that directory and nothing else, runs as
# uid 10001 with a read-only root filesystem in mind (the chart mounts /tmp).
# neonize's wheel carries its Go shared library, which needs only libc: the
# slim base has all it loads (tests/chart/test_dockerfile.py checks both).
# tests/chart/test_dockerfile.py runs the `pip` RUN lines below in fresh
# virtual environments, so keep each install step one `pip` command that
# reads its paths from the WHEELS and SRC variables.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    SRC=/src \
    WHEELS=/wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY wasp/ wasp/
COPY operator/ operator/
COPY master/ master/
COPY worker/ worker/
RUN pip wheel --wheel-dir "$WHEELS" "$SRC"

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WHEELS=/wheels
RUN groupadd --system --gid 10001 wasp \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin wasp
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links "$WHEELS" "wasp==0.1.0"
USER 10001:10001
WORKDIR /tmp
# worker and master HTTP, operator metrics, operator admission webhook
EXPOSE 8080 9090 9443
ENTRYPOINT ["wasp"]
CMD ["--help"]
