# Fulcrum in a container: one static binary in an empty image.
#
# The image needs no toolchain image (none is pulled): build the binary on the
# host first, statically linked against glibc, then the image:
#
#   RUSTFLAGS="-C target-feature=+crt-static" \
#     cargo build --release --target x86_64-unknown-linux-gnu
#   docker build -t fulcrum .
#
# BINARY picks another build (e.g. a debug one) without editing this file.
FROM scratch
ARG BINARY=target/x86_64-unknown-linux-gnu/release/fulcrum
COPY ${BINARY} /fulcrum
COPY examples/docker/fulcrum.yaml /etc/fulcrum/fulcrum.yaml
ENV FULCRUM_CONFIG=/etc/fulcrum/fulcrum.yaml
EXPOSE 8080 9000
ENTRYPOINT ["/fulcrum"]
CMD ["run"]
