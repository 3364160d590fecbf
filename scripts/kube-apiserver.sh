#!/usr/bin/env bash
# kube-apiserver.sh builds a real kube-apiserver and etcd from the Go module
# proxy, for integrations/kube's tests: k8s.io/kubernetes v1.37.2's
# cmd/kube-apiserver (its staging modules replaced by their v0.37.2 releases)
# and etcd v3.7.0's server, the version kube-apiserver's own module graph
# pins (Debian's etcd-server is 3.4). The module that pins them is
# integrations/kube/apiserver.
#
#   scripts/kube-apiserver.sh build   build both unless already built; print the
#                                     directory that holds bin/kube-apiserver and
#                                     bin/etcd on stdout (all else on stderr)
#   scripts/kube-apiserver.sh dir     print that directory without building
#
# The binaries are cached in $CANARYD_CACHE/kube-<hash>/bin (default
# $HOME/.cache/canaryd), the hash taken over the build module's go.mod,
# go.sum and sources and the Go version, so a version bump rebuilds. From a
# cold Go build cache the build takes minutes (see the Makefile's prebuild);
# with the binaries cached, build returns at once.
set -euo pipefail

tmp=
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mod=$root/integrations/kube/apiserver
cache=${CANARYD_CACHE:-$HOME/.cache/canaryd}

dir() {
	local hash
	hash=$( (cd "$mod" && cat go.mod go.sum etcd/main.go "$root/scripts/kube-apiserver.sh" && go env GOVERSION GOARCH) |
		sha256sum | cut -c1-16)
	echo "$cache/kube-$hash"
}

build() {
	local d
	d=$(dir)
	if [[ -x $d/bin/kube-apiserver && -x $d/bin/etcd ]]; then
		echo "$d"
		return
	fi
	mkdir -p "$d"
	tmp=$(mktemp -d "$d/build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	local t=$SECONDS version
	# The version kube-apiserver reports (--version, /version), as its own
	# release build stamps it; the module's version is the one go.mod pins.
	version=$(cd "$mod" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
	local v=${version#v}
	local ldflags="-X k8s.io/component-base/version.gitVersion=$version"
	ldflags+=" -X k8s.io/component-base/version.gitMajor=${v%%.*}"
	v=${v#*.}
	ldflags+=" -X k8s.io/component-base/version.gitMinor=${v%%.*}"
	echo "kube-apiserver.sh: building kube-apiserver $version and etcd into $d/bin" >&2
	(cd "$mod" && go build -ldflags "$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver) >&2
	(cd "$mod" && go build -o "$tmp/etcd" ./etcd) >&2
	mkdir -p "$d/bin"
	# Moved in last, so that a build cut short leaves nothing that looks built.
	mv "$tmp/etcd" "$d/bin/etcd"
	mv "$tmp/kube-apiserver" "$d/bin/kube-apiserver"
	echo "kube-apiserver.sh: built in $((SECONDS - t)) s" >&2
	echo "$d"
}

case ${1:-} in
build) build ;;
dir) dir ;;
*)
	echo "usage: $0 build|dir" >&2
	exit 2
	;;
esac
