# weir: one image, every service (`weir ingest|process|store|run`).
#
# The builder and runtime images are build arguments, so the same file
# builds from a local base where no registry is reachable
# (scripts/compose-e2e: `--build-arg RUNTIME=localhost/debian:bookworm`).
# The default target compiles weir in the builder; the `prebuilt` target
# takes a binary built outside (`BINARY`, default `target/release/weir`,
# built on the same Debian) and is what the podman end-to-end test runs.
ARG BUILDER=rust:1-bookworm
ARG RUNTIME=debian:bookworm-slim

FROM ${BUILDER} AS build
# librdkafka's TLS links the system OpenSSL.
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin weir

FROM ${RUNTIME} AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/weir.toml /etc/weir/weir.toml
VOLUME /var/lib/weir
ENTRYPOINT ["weir"]
CMD ["run", "--config", "/etc/weir/weir.toml", "--data-dir", "/var/lib/weir"]

FROM runtime AS prebuilt
ARG BINARY=target/release/weir
COPY ${BINARY} /usr/local/bin/weir

FROM runtime AS weir
COPY --from=build /src/target/release/weir /usr/local/bin/weir
