# The shardns image, built from source with a registry at hand:
#
#   docker build -t shardns .        (or: podman build -t shardns .)
#
# Build stage: Debian bookworm's Rust image with Debian's iptables (and clang and libbpf-dev
# for the in-kernel fast path's BPF program), `cargo build --release --features fastpath`,
# then scripts/rootfs.sh lays out the runtime's root file system (the binary, iptables nft and
# legacy, every library they link, /etc/passwd, the empty directories). Runtime stage: that
# file system on scratch, nothing else. scripts/image.sh builds the same image without a
# registry from a binary built here (deploy/podman/Containerfile: keep its lines below alike).
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables binutils clang libbpf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p shardns --features fastpath \
    && scripts/rootfs.sh target/release/shardns /rootfs

FROM scratch
COPY --from=build /rootfs /
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin
ENTRYPOINT ["/usr/local/bin/shardns"]
