# A small image running `apimail relay` as a non-root user, with the data
# directory (tokens, outbox, journal, relay users) on a volume. See the
# README, "In a container".
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p apimail

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data apimail \
 && mkdir -p /data /config && chown apimail /data
COPY --from=build /src/target/release/apimail /usr/local/bin/apimail
USER apimail
ENV APIMAIL_DATA_DIR=/data APIMAIL_CONFIG=/config/config.toml
VOLUME ["/data"]
EXPOSE 2525 587
ENTRYPOINT ["apimail"]
CMD ["relay", "--listen", "0.0.0.0:2525"]
