#!/usr/bin/env bash
# Builds perfpilot's container image: a static (musl) binary, jemalloc included, in a
# `FROM scratch` image with its default configuration (deploy/container/Containerfile).
#
#   scripts/build-image.sh                 # release build, image perfpilot:<version>
#   IMAGE=registry.example.com/perfpilot:0.1.0 scripts/build-image.sh && podman push "$IMAGE"
#   PROFILE=static-check scripts/build-image.sh   # CI: a quicker build, no fat LTO
#
# Always: checks that the binary is static (`file`, `ldd`) and that it starts
# (`--version`, `check-config` on the image's configuration), and prints its size. Then builds
# the image with buildah, else podman, where one is installed and works here (it needs user
# namespaces and a storage driver); otherwise it says why it skipped that half. Without the
# musl target (`rustup target add x86_64-unknown-linux-musl`) or a musl C compiler (Debian's
# musl-tools, for jemalloc) it says `skipped: ...` and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
profile=${PROFILE:-release}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image=${IMAGE:-perfpilot:$version}

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  if ! rustup target add "$target" >/dev/null 2>&1; then
    echo "skipped: the $target target is not installed and cannot be (rustup target add $target)"
    exit 0
  fi
fi
if ! command -v musl-gcc >/dev/null; then
  echo "skipped: no musl C compiler (Debian: apt-get install musl-tools) to build jemalloc for $target"
  exit 0
fi

echo "== cargo build --profile $profile --target $target"
started=$SECONDS
# jemalloc's C code is compiled for musl by musl-gcc, which the cc crate picks for this
# target by itself.
cargo build --quiet --locked --profile "$profile" --target "$target" --bin perfpilot
echo "built in $((SECONDS - started)) s"
bin=target/$target/$profile/perfpilot

echo "== static?"
description=$(file -L "$bin")
echo "$description"
case "$description" in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) echo "not a static binary: $bin" >&2; exit 1 ;;
esac
# glibc's ldd says "not a dynamic executable" (exit 1) or, for a static PIE, "statically
# linked"; anything else lists shared libraries.
linked=$(ldd "$bin" 2>&1 || true)
case "$linked" in
  *"not a dynamic executable"* | *"statically linked"*) ;;
  *) echo "ldd lists shared libraries for $bin:" >&2; echo "$linked" >&2; exit 1 ;;
esac
echo "ok: ldd finds no shared libraries"

echo "== it starts"
"$bin" --version
# The image's configuration, from a directory with nothing else in it (as in the image).
root=$PWD
empty=$(mktemp -d)
trap 'rm -rf "$empty"' EXIT
(cd "$empty" && env -i "$root/$bin" check-config --config "$root/deploy/container/perfpilot.toml" >/dev/null)
echo "ok: check-config accepts deploy/container/perfpilot.toml"
# jemalloc is the allocator in the static build too: it prints its options at exit.
stats=$(cd "$empty" && env -i _RJEM_MALLOC_CONF=stats_print:true \
  "$root/$bin" strategies --config "$root/deploy/container/perfpilot.toml" 2>&1 >/dev/null)
grep -q "opt.narenas: 1" <<<"$stats" || { echo "jemalloc is not running in the static binary" >&2; exit 1; }
echo "ok: jemalloc runs with the agent's options (opt.narenas: 1)"
# And serves: the image's command, on a free loopback port, answers /health.
(cd "$empty" && exec env -i "$root/$bin" run --config "$root/deploy/container/perfpilot.toml" \
  --listen 127.0.0.1:0 >"$empty/stdout" 2>"$empty/stderr") &
agent=$!
for _ in $(seq 1 100); do
  grep -q '^listening on ' "$empty/stdout" 2>/dev/null && break
  sleep 0.1
done
base=$(sed -n 's/^listening on //p' "$empty/stdout")
if [ -z "$base" ] || ! curl -fsS --max-time 5 "$base/health" >/dev/null; then
  kill "$agent" 2>/dev/null || true
  echo "the static binary did not serve /health within 10 s:" >&2
  cat "$empty/stderr" >&2
  exit 1
fi
kill -TERM "$agent"
wait "$agent" || true
echo "ok: perfpilot run (the image's command) served $base/health"
size=$(stat -c %s "$bin")
echo "binary: $bin, $size bytes ($((size / 1024)) KiB)"

echo "== image"
builder=""
for tool in buildah podman; do
  if command -v "$tool" >/dev/null && "$tool" info >/dev/null 2>&1; then
    builder=$tool
    break
  fi
done
if [ -z "$builder" ]; then
  why="neither buildah nor podman is installed"
  command -v buildah >/dev/null || command -v podman >/dev/null && why="buildah/podman do not run here ($(
    { buildah info 2>&1 || podman info 2>&1; } | tail -1))"
  echo "skipped: image not built: $why; the binary above is what the image holds"
  exit 0
fi
case $builder in
  buildah) buildah bud --quiet --build-arg "PROFILE=$profile" -f deploy/container/Containerfile -t "$image" . ;;
  podman) podman build --quiet --build-arg "PROFILE=$profile" -f deploy/container/Containerfile -t "$image" . ;;
esac
echo "image $image built with $builder"
user=$("$builder" inspect --type image --format '{{.OCIv1.Config.User}}' "$image" 2>/dev/null ||
  "$builder" image inspect --format '{{.Config.User}}' "$image")
[ "$user" = "10001:10001" ] || { echo "image user is '$user', not 10001:10001" >&2; exit 1; }
case $builder in
  buildah) "$builder" images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -F ":${image##*:} " | grep -F "${image%%:*}" || true ;;
  podman) "$builder" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -F "${image##*/}" || true ;;
esac
echo "push: $builder push $image <registry>/perfpilot:$version"
