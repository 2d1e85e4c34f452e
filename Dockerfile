# The Switchboard manager: built in a Rust image, run from a slim Debian one as a non-root
# user. `docker compose up` runs it against PostgreSQL (see docker-compose.yml).

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p switchboard-server --bin switchboard

FROM debian:bookworm-slim
# curl is only for the container health check (GET /readyz).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/switchboard switchboard
COPY --from=builder /src/target/release/switchboard /usr/local/bin/switchboard
USER switchboard
# Without a database URL the SQLite file lands here, in the user's writable home.
WORKDIR /var/lib/switchboard
EXPOSE 8080
ENTRYPOINT ["switchboard"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
