# syntax=docker/dockerfile:1
# The release binary in a small runtime image: distroless (glibc, CA certificates, no shell), run as
# an unprivileged user. Build: docker build -t mcp-oauth-bridge .

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that a change of our sources does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/.fingerprint/mcp-oauth-bridge-* target/release/deps/mcp_oauth_bridge-* target/release/deps/libmcp_oauth_bridge-*
COPY src ./src
# The pages' shipped translations, compiled into the binary.
COPY locales ./locales
RUN cargo build --release --locked --bin mcp-oauth-bridge \
    && strip target/release/mcp-oauth-bridge

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/mcp-oauth-bridge /usr/local/bin/mcp-oauth-bridge
USER 65532:65532
EXPOSE 8080
# No shell in the image: the binary checks its own /healthz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/mcp-oauth-bridge", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/mcp-oauth-bridge"]
CMD ["serve", "--config", "/etc/mcp-oauth-bridge/config.yaml"]
