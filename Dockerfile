# syntax=docker/dockerfile:1
# sbmesh image: a release build on Debian bookworm, copied alone into distroless (glibc, CA
# certificates, no shell, user 65532). Build: docker build -t sbmesh:dev .

FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependency layer: compile every dependency against stub sources, so that this layer is reused
# until Cargo.toml or Cargo.lock change. Stubs are made for the library, the binary, and every
# [[bench]], [[test]] and [[example]] the manifest declares (cargo checks that their files exist
# even when it does not build them).
COPY Cargo.toml Cargo.lock ./
RUN set -eu; \
    mkdir -p src; \
    echo 'fn main() {}' > src/main.rs; \
    : > src/lib.rs; \
    for kind in bench test example; do \
      case "$kind" in bench) dir=benches ;; *) dir="${kind}s" ;; esac; \
      for name in $(awk -v t="[[${kind}]]" '$0 == t {in_t = 1; next} /^\[/ {in_t = 0} in_t && /^name *=/ {gsub(/.*= *"|".*/, ""); print}' Cargo.toml); do \
        mkdir -p "$dir"; echo 'fn main() {}' > "$dir/$name.rs"; \
      done; \
    done; \
    cargo build --release --locked --bin sbmesh; \
    rm -rf src target/release/sbmesh target/release/deps/sbmesh-* target/release/deps/libsbmesh-* \
      target/release/.fingerprint/sbmesh-*

# The real sources. A build script or files included from outside src/ must be copied here too.
COPY build.rs ./
COPY src ./src
# COPY keeps the build context's timestamps, which can be older than the stub build: touch so
# cargo rebuilds the crate itself.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin sbmesh

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/sbmesh /sbmesh
USER 65532:65532
# 8443: HTTPS webhook (POST /mutate, /healthz, /readyz); 9090: plain-HTTP admin (/metrics,
# /livez, /readyz).
EXPOSE 8443 9090
ENTRYPOINT ["/sbmesh"]
CMD ["serve"]
