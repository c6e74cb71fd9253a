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
# the main module.
#
# Cache: ${CONSUL_LEADER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-leader}/<name>/<version>/<name>

# Callers run `sh build-hashicorp.sh ...`, and Debian's sh is dash, which has no
# `pipefail` (it stops at the `set` below with "Illegal option -o pipefail"):
# re-run under bash, which the rest of the script needs anyway.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
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

# Consul builds without cgo. Nomad's Linux build needs it: its executor imports
# runc's nsenter (C code) and libcontainer/userns, whose GetUserNamespaceMappings
# exists only with cgo, so CGO_ENABLED=0 fails with "undefined:
# userns.GetUserNamespaceMappings". HashiCorp's GNUmakefile builds Linux with
# CGO_ENABLED=1 as well.
case $name in
  nomad)
    cgo=1
    command -v "${CC:-cc}" >/dev/null || { log "nomad needs cgo: install a C compiler (apt-get install gcc)"; exit 1; } ;;
  *) cgo=0 ;;
esac
export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-auto} CGO_ENABLED=$cgo
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
# The tag's commit time as yyyymmddhhmmss, the form pseudo-versions carry.
tagtime=$(cd "$work" && go list -m -f '{{.Time.UTC.Format "20060102150405"}}' "$module@$version")

# Prints the newest pseudo-version of module $1 that the proxy lists and that
# is not newer than the tag's commit; nothing when there is none or when the
# first GOPROXY entry is not an HTTP proxy. The list holds only the versions
# someone has fetched, so this is the closest snapshot the proxy can give.
snapshot_before() {
  local proxy
  proxy=$(go env GOPROXY)
  proxy=${proxy%%[,|]*}
  case $proxy in http://* | https://*) ;; *) return 0 ;; esac
  command -v curl >/dev/null || return 0
  curl -fsS --max-time 60 "$proxy/$(printf '%s' "$1" | sed 's/[A-Z]/!\L&/g')/@v/list" |
    sed -n 's/^\(v[0-9.]*-\([0-9]\{14\}\)-[0-9a-f]\{12\}\)$/\2 \1/p' |
    awk -v t="$tagtime" '$1 <= t' | sort | tail -n 1 | cut -d ' ' -f 2
}

cp -r "$src" "$work/src"
chmod -R u+w "$work/src"
cd "$work/src"

# Every `replace X => ./dir` points into a nested module the zip does not hold.
replaced=$(go mod edit -json | tr -d '\n \t' | grep -o '"Old":{"Path":"[^"]*"},"New":{"Path":"\./[^"]*"}' | sed 's/"Old":{"Path":"\([^"]*\)"},"New":{"Path":"\([^"]*\)"}/\1=\2/' || true)
for pair in $replaced; do
  sub=${pair%%=*}
  dir=${pair#*=}
  required=$(sed -n "s|^[[:space:]]*$sub \(v[^ ]*\).*|\1|p" go.mod | head -n 1)
  # `go list -m` turns the commit into the version go.mod accepts: the
  # sub-module's tag when one points at that commit, else a pseudo-version.
  if subver=$(cd "$work" && go list -m -f '{{.Version}}' "$sub@$commit" 2>/dev/null); then
    log "pinning $sub to $subver (commit ${commit:0:12})"
    go mod edit -dropreplace="$sub" -replace="$sub=$sub@$subver"
  # Some proxies serve only versions someone has fetched before. A sub-module
  # with no tags (Nomad's api/) is required at a pseudo-version that is just a
  # stale snapshot (Nomad v1.9.7 requires one from 2023), which does not
  # compile: take the newest listed snapshot up to the tag instead, copied into
  # ./dir so that the directory replace stays and it can be patched below.
  elif [[ $required =~ -[0-9]{14}-[0-9a-f]{12}$ ]] && subver=$(snapshot_before "$sub") && [ -n "$subver" ]; then
    log "the proxy does not serve $sub at commit ${commit:0:12}; using its newest snapshot before the tag, $subver, in $dir"
    subdir=$(cd "$work" && go mod download -json "$sub@$subver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -n "$subdir" ] || { log "could not download $sub@$subver"; exit 1; }
    cp -r "$subdir" "$dir"
    chmod -R u+w "$dir"
  # Tagged sub-modules (Consul's): the version the main module requires, which
  # the release process tags from the same branch.
  else
    log "pinning $sub to the version go.mod requires, $required (the proxy does not serve commit ${commit:0:12})"
    go mod edit -dropreplace="$sub"
  fi
done

# Nomad v1.9.5 back-ported `nomad operator root keyring remove -force` (GH-24766)
# to release/1.9.x, after the newest api/ snapshot before v1.9.7 that the proxy
# serves (2024-12-18), so v1.9.7 does not compile against it ("unknown field
# Force in struct literal of type api.KeyringDeleteOptions"). Add the field and
# its `?force=` query parameter as the release branch has them. Applies only to
# a stand-in api/ copied above that lacks them.
if [ "$name" = nomad ] && [ -f api/keyring.go ] && ! grep -q 'Force bool' api/keyring.go &&
  grep -q 'Force: *force' command/operator_root_keyring_remove.go 2>/dev/null; then
  sed -i -e '/^type KeyringDeleteOptions struct {$/,/^}$/s/^}$/\tForce bool \/\/ GH-24766\n}/' \
    -e 's|"/v1/operator/keyring/key/%v",$|"/v1/operator/keyring/key/%v?force=%t",|' \
    -e 's|url\.PathEscape(opts\.KeyID)), nil, nil, w)|url.PathEscape(opts.KeyID), opts.Force), nil, nil, w)|' api/keyring.go
  grep -q 'opts.Force' api/keyring.go || { log "could not add KeyringDeleteOptions.Force to api/keyring.go"; exit 1; }
  log "added KeyringDeleteOptions.Force (GH-24766, release/1.9.x) to the stand-in api/"
fi

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
