# syntax=docker/dockerfile:1
# segflow's container image. Built by `docker compose up --build` (see docker-compose.yml) or
# alone with `docker build -t segflow .` (BuildKit, the default builder, for the cache mounts).
# tests/deploy_files.rs parses this file and runs the binary with this CMD's flags.

# builder compiles the release binary.
FROM rust:1.95-bookworm AS builder

# rdkafka builds librdkafka from its C sources (make, cmake, a C/C++ compiler, pkg-config);
# aws-sdk-s3 and mongodb use rustls, so no OpenSSL headers are needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake build-essential pkg-config \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The registry, git checkouts and target dir live in BuildKit cache mounts: a rebuild after a
# source change recompiles segflow, not its dependencies. The cached target dir is not part of
# the image, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin segflow \
 && install -m 0755 target/release/segflow /usr/local/bin/segflow

# runtime holds segflow and FFmpeg, nothing else.
FROM debian:bookworm-slim AS runtime

# ffmpeg and ffprobe must be on PATH; curl is for the health check; ca-certificates for TLS
# to real S3, Kafka or MongoDB endpoints.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

# A fixed non-root uid; /data is created and owned before VOLUME so that a fresh named volume
# mounted there starts with this ownership.
RUN groupadd --system --gid 10001 segflow \
 && useradd --system --uid 10001 --gid segflow --home-dir /data --no-create-home \
    --shell /usr/sbin/nologin segflow \
 && mkdir -p /data \
 && chown segflow:segflow /data

COPY --from=builder /usr/local/bin/segflow /usr/local/bin/segflow
# Fails the build here, not at start-up, if a shared library the binary links is missing.
RUN segflow --version

USER segflow
WORKDIR /data
ENV RUST_LOG=info
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health || exit 1

ENTRYPOINT ["segflow"]
CMD ["run", "--listen", "0.0.0.0:8080", "--data-dir", "/data"]
