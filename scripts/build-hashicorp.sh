#!/usr/bin/env bash
# Builds a HashiCorp Go binary (consul or nomad) from the Go module proxy and
# caches it outside the checkout, keyed by name and version.
#
#   scripts/build-hashicorp.sh consul v1.22.6   -> prints the cached binary's path
#
# Why not `go install github.com/hashicorp/consul@v1.22.6`: both modules carry
# `replace` (and Consul `exclude`) directives, which `go install pkg@ver`
# refuses. So we copy the module's source out of the module cache, make it the
# main module, and point each directory replace (`=> ./api`, `=> ./sdk`, ...),
# whose directory is not in the module zip, at the same sub-module at the tag's
# commit. Module->module replaces and excludes keep working because the copy is
# the main module. See ../shared/docs/consul-nomad-facts.md §7.
#
# Cache: ${CONSUL_LEADER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-leader}/<name>/<version>/<name>
set -euo pipefail

name=${1:?usage: build-hashicorp.sh consul|nomad VERSION}
version=${2:?usage: build-hashicorp.sh consul|nomad VERSION}
module=github.com/hashicorp/$name
cache_root=${CONSUL_LEADER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-leader}
out_dir=$cache_root/$name/$version
out=$out_dir/$name

if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "build-hashicorp: go is not on PATH; install Go or set ${name^^}_BIN" >&2; exit 1; }

log() { echo "build-hashicorp: $*" >&2; }
start=$(date +%s)
log "building $module@$version (first time only; cached in $out_dir)"

export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-auto} CGO_ENABLED=0
# The sub-modules were directory replaces, so the module's go.sum has no lines
# for them, and the checksum database is not always reachable through the
# proxy: trust the proxy's copy for this module's own sub-modules only.
export GONOSUMDB=${GONOSUMDB:+$GONOSUMDB,}$module
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

info=$(go mod download -json "$module@$version")
src=$(printf '%s' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
commit=$(printf '%s' "$info" | sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]*\)",\{0,1\}$/\1/p' | head -n 1)
[ -n "$src" ] || { log "no source directory in: $info"; exit 1; }
[ -n "$commit" ] || { log "the proxy gave no commit for $module@$version; cannot pin sub-modules"; exit 1; }

cp -r "$src" "$work/src"
chmod -R u+w "$work/src"
cd "$work/src"

# Every `replace X => ./dir` points into a nested module the zip does not hold.
replaced=$(go mod edit -json | tr -d '\n \t' | grep -o '"Old":{"Path":"[^"]*"},"New":{"Path":"\./[^"]*"}' | sed 's/"Old":{"Path":"\([^"]*\)"}.*/\1/' || true)
for sub in $replaced; do
  # `go list -m` turns the commit into the version go.mod accepts: the
  # sub-module's tag when one points at that commit, else a pseudo-version.
  # Some proxies serve tagged versions only; then fall back to the version the
  # main module requires, which the release process tags from the same branch.
  if subver=$(cd "$work" && go list -m -f '{{.Version}}' "$sub@$commit" 2>/dev/null); then
    log "pinning $sub to $subver (commit ${commit:0:12})"
    go mod edit -dropreplace="$sub" -replace="$sub=$sub@$subver"
  else
    log "pinning $sub to the version go.mod requires (the proxy does not serve commit ${commit:0:12})"
    go mod edit -dropreplace="$sub"
  fi
done

# ldflags give `consul version` / `nomad version` the real version string.
case $name in
  consul) ldflags="-s -w -X github.com/hashicorp/consul/version.GitCommit=${commit:0:12} -X github.com/hashicorp/consul/version.Version=${version#v} -X github.com/hashicorp/consul/version.VersionPrerelease=" ;;
  nomad)  ldflags="-s -w -X github.com/hashicorp/nomad/version.GitCommit=${commit:0:12} -X github.com/hashicorp/nomad/version.Version=${version#v} -X github.com/hashicorp/nomad/version.VersionPrerelease=" ;;
  *) ldflags="-s -w" ;;
esac

go mod tidy >/dev/null 2>&1 || true
go build -trimpath -ldflags "$ldflags" -o "$work/$name" .
mkdir -p "$out_dir"
mv "$work/$name" "$out.tmp" && mv "$out.tmp" "$out"
log "built $out in $(( $(date +%s) - start ))s"
echo "$out"
