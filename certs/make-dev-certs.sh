#!/usr/bin/env bash
# Makes the webhook's serving certificate with `sbmesh certs` and writes what the dev overlay
# (manifests/overlays/dev) needs: the Secret's files and the caBundle patch. See certs/README.md.
# Keys are written 0600 into git-ignored directories and never committed.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: certs/make-dev-certs.sh [--service NAME] [--namespace NS] [--out DIR] [--overlay DIR]
                               [--sbmesh PATH] [--days N]

  --service NAME   Service the API server calls (default: sbmesh)
  --namespace NS   its namespace (default: sbmesh-system)
  --out DIR        where `sbmesh certs` writes ca.crt, tls.crt, tls.key (default: certs/out)
  --overlay DIR    the dev overlay to fill in (default: manifests/overlays/dev); the files go to
                   DIR/generated/
  --sbmesh PATH    the sbmesh binary; default: $SBMESH_BIN, else target/release/sbmesh if it
                   exists, else `cargo run --quiet --release --`
  --days N         certificate lifetime, passed to `sbmesh certs --days`

Paths are relative to the current directory; the defaults are relative to the repository.
EOF
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
service="sbmesh"
namespace="sbmesh-system"
out="$repo/certs/out"
overlay="$repo/manifests/overlays/dev"
sbmesh_bin="${SBMESH_BIN:-}"
days=""

while (($# > 0)); do
  case "$1" in
    --service) service=${2:?--service needs a value}; shift 2 ;;
    --namespace) namespace=${2:?--namespace needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --overlay) overlay=${2:?--overlay needs a value}; shift 2 ;;
    --sbmesh) sbmesh_bin=${2:?--sbmesh needs a value}; shift 2 ;;
    --days) days=${2:?--days needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "make-dev-certs: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

# How to run `sbmesh`: an explicit binary, the release build if there is one, else cargo.
if [[ -n "$sbmesh_bin" ]]; then
  [[ -x "$sbmesh_bin" ]] || { echo "make-dev-certs: $sbmesh_bin is not an executable" >&2; exit 2; }
  sbmesh=("$sbmesh_bin")
elif [[ -x "$repo/target/release/sbmesh" ]]; then
  sbmesh=("$repo/target/release/sbmesh")
else
  command -v cargo >/dev/null || {
    echo "make-dev-certs: no sbmesh binary (--sbmesh, \$SBMESH_BIN, target/release/sbmesh) and no cargo to build one" >&2
    exit 2
  }
  sbmesh=(cargo run --quiet --release --manifest-path "$repo/Cargo.toml" --)
fi

generated="$overlay/generated"
[[ -f "$overlay/kustomization.yaml" ]] || {
  echo "make-dev-certs: $overlay has no kustomization.yaml (is --overlay the dev overlay?)" >&2
  exit 2
}
mkdir -p "$out" "$generated"

args=(certs --service "$service" --namespace "$namespace" --out "$out")
[[ -n "$days" ]] && args+=(--days "$days")

echo "make-dev-certs: ${sbmesh[*]} ${args[*]}" >&2
# stdout is the caBundle and nothing else; sbmesh's own messages go to stderr.
ca_bundle=$("${sbmesh[@]}" "${args[@]}")
ca_bundle=${ca_bundle//[[:space:]]/}
[[ -n "$ca_bundle" ]] || { echo "make-dev-certs: sbmesh certs printed no caBundle" >&2; exit 1; }

for f in ca.crt tls.crt tls.key; do
  [[ -s "$out/$f" ]] || { echo "make-dev-certs: sbmesh certs did not write $out/$f" >&2; exit 1; }
done

# The caBundle must be the CA file that was written next to it, or the API server will reject
# the serving certificate: catch a mismatch here rather than as a failed admission later.
if [[ "$(printf '%s' "$ca_bundle" | base64 -d 2>/dev/null)" != "$(cat "$out/ca.crt")" ]]; then
  echo "make-dev-certs: the caBundle printed by sbmesh certs is not base64 of $out/ca.crt" >&2
  exit 1
fi

umask 077
install -m 0644 "$out/ca.crt" "$generated/ca.crt"
install -m 0644 "$out/tls.crt" "$generated/tls.crt"
install -m 0600 "$out/tls.key" "$generated/tls.key"
cat >"$generated/cabundle-patch.yaml" <<EOF
# Written by certs/make-dev-certs.sh for ${service}.${namespace}.svc. Do not edit, do not commit.
- op: add
  path: /webhooks/0/clientConfig/caBundle
  value: ${ca_bundle}
EOF
chmod 0644 "$generated/cabundle-patch.yaml"

cat <<EOF
make-dev-certs: serving certificate for ${service}.${namespace}.svc
  ${out}/ca.crt, tls.crt, tls.key (key 0600)     written by sbmesh certs
  ${generated}/tls.crt, tls.key, ca.crt          -> Secret ${namespace}/sbmesh-tls (secretGenerator)
  ${generated}/cabundle-patch.yaml               -> caBundle of MutatingWebhookConfiguration 00-sbmesh
next: kubectl apply -k ${overlay}
EOF
