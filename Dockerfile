# weir: one image, every service (`weir ingest|process|store|run`).
FROM rust:1-bookworm AS build
# librdkafka's TLS links the system OpenSSL.
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin weir

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/weir /usr/local/bin/weir
COPY deploy/weir.toml /etc/weir/weir.toml
VOLUME /var/lib/weir
ENTRYPOINT ["weir"]
CMD ["run", "--config", "/etc/weir/weir.toml", "--data-dir", "/var/lib/weir"]
