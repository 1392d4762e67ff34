# syntax=docker/dockerfile:1
# gitbroker container image.
#
#   docker build -t gitbroker:0.1.0 .
#
# Three stages: the dependencies are compiled from Cargo.toml and Cargo.lock
# alone (a layer that is rebuilt only when they change), then gitbroker's
# own sources, then the binary is copied into a distroless image: glibc and
# libgcc only, no shell, no package manager, running as uid 65532.
# gitbroker uses rustls (no OpenSSL) and compiles its templates and
# stylesheet into the binary, so the binary is all the image needs.

# the toolchain scripts/test.sh builds and tests with (Cargo.toml's
# rust-version is the oldest one it claims)
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS deps
WORKDIR /src
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
COPY Cargo.toml Cargo.lock ./
# Empty targets with the manifest's names: cargo compiles every dependency
# and caches it in this layer.
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && for bench in runtime_api lifecycle credential ops; do echo 'fn main() {}' > "benches/$bench.rs"; done \
    && cargo build --release --locked --bin gitbroker \
    && rm -rf src benches

FROM deps AS build
COPY src src
COPY benches benches
COPY templates templates
COPY assets assets
# touch: newer than the placeholders compiled above, so cargo rebuilds them
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin gitbroker \
    && mkdir -p /out/var/lib/gitbroker \
    && cp target/release/gitbroker /out/gitbroker

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
# the repository it was built from: --build-arg SOURCE=https://…
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="gitbroker" \
      org.opencontainers.image.description="A Git token broker for GitOps runtimes: OAuth2 and personal access tokens per (user, runtime)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/gitbroker /usr/local/bin/gitbroker
# the embedded store's default directory, owned by the runtime user (mount a
# volume here; with Redis nothing is written to disk)
COPY --from=build --chown=65532:65532 /out/var/lib/gitbroker /var/lib/gitbroker
USER 65532:65532
ENV GITBROKER_CONFIG=/etc/gitbroker/gitbroker.toml
EXPOSE 8080
# exec form: there is no shell in this image. Probes the `listen` address
# of $GITBROKER_CONFIG (a wildcard address on loopback) at /readyz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/gitbroker", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/gitbroker"]
CMD ["serve"]
