# The Kafka-protocol broker of the local variant: tansu (crates.io,
# `cargo install tansu --features dynostore,libsql`), its binary copied
# into bin/ by scripts/compose-e2e, on SQLite in the broker's volume.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
COPY bin/tansu /usr/local/bin/tansu
WORKDIR /var/lib/kafka/data
ENTRYPOINT ["tansu"]
