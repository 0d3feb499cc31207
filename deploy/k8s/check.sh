#!/usr/bin/env bash
# Validates the Kubernetes manifests under deploy/k8s without a cluster:
#
#   1. renders both overlays with `kubectl kustomize` (kustomize v5 from a
#      recent kubectl, or v2.0.3 from Debian's kubernetes-client 1.20);
#   2. yamllint --strict (deploy/k8s/.yamllint) on every YAML file under
#      deploy/k8s and on the rendered output;
#   3. kubernetes-validate --strict against Kubernetes $K8S_VERSION on the
#      rendered output and on examples/*.yaml. It has no schema for the
#      ServiceMonitor CRD and only warns about it: any other warning fails
#      here (an unknown kind or apiVersion would otherwise pass unchecked);
#   4. check-rendered.py: the ServiceMonitor against prometheus-operator's
#      CRD schema (vendored in schemas/), and what no schema knows: every
#      environment reference in gateway.toml is set by the workload, grace
#      periods cover the drain, the LoadBalancer's RTP ports are the
#      [media] range, and the two gateway.toml files differ only in [media].
#
# Tools: yamllint, kubernetes-validate and jsonschema from the venv at
# $K8S_VENV (default target/k8s-venv; `scripts/setup.sh test` makes it) and
# kubectl from PATH, or $KUBECTL.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${K8S_VENV:-$repo/target/k8s-venv}"
kubectl="${KUBECTL:-kubectl}"
k8s_version="${K8S_VERSION:-1.32.0}"

die() { printf 'check.sh: %s\n' "$*" >&2; exit 2; }
for tool in yamllint kubernetes-validate python; do
  [ -x "$venv/bin/$tool" ] \
    || die "$venv/bin/$tool is missing: run scripts/setup.sh test (or set K8S_VENV to a venv with yamllint, kubernetes-validate and jsonschema)"
done
"$venv/bin/python" -c 'import jsonschema, yaml, tomllib' 2>/dev/null \
  || die "$venv/bin/python lacks jsonschema, PyYAML or tomllib (Python >= 3.11): run scripts/setup.sh test"
command -v "$kubectl" >/dev/null \
  || die "kubectl not found (KUBECTL=$kubectl): install kubectl, or Debian's kubernetes-client (scripts/setup.sh test does)"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "== kubectl kustomize ($("$kubectl" version --client 2>/dev/null | head -n 1))"
rendered=()
for overlay in "$here"/overlays/*/; do
  name="$(basename "$overlay")"
  "$kubectl" kustomize "$overlay" >"$out/$name.yaml"
  rendered+=("$out/$name.yaml")
  echo "rendered $name: $(grep -c '^kind:' "$out/$name.yaml") objects"
done

echo "== yamllint $("$venv/bin/yamllint" --version | awk '{print $2}')"
mapfile -t sources < <(find "$here" -type f \( -name '*.yaml' -o -name '*.yml' -o -name '.yamllint' \) | sort)
"$venv/bin/yamllint" --strict -c "$here/.yamllint" "${sources[@]}" "${rendered[@]}"
echo "${#sources[@]} files and ${#rendered[@]} renderings clean"

echo "== kubernetes-validate $("$venv/bin/kubernetes-validate" --version) (Kubernetes $k8s_version, strict)"
status=0
report="$("$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" \
  "${rendered[@]}" "$here"/examples/*.yaml)" || status=$?
[ -z "$report" ] || printf '%s\n' "$report"
unexpected="$(printf '%s\n' "$report" | grep '^WARN' | grep -v 'kind ServiceMonitor with api version monitoring.coreos.com/v1' || true)"
if [ "$status" -ne 0 ] || [ -n "$unexpected" ]; then
  echo "check.sh: kubernetes-validate failed" >&2
  exit 1
fi
echo "valid (ServiceMonitor left to the next step)"

echo "== check-rendered.py"
args=()
for f in "${rendered[@]}"; do args+=("$(basename "$f" .yaml)=$f"); done
"$venv/bin/python" "$here/check-rendered.py" \
  "$here/base/gateway.toml" "$here/overlays/loadbalancer-deployment/gateway.toml" \
  "$here/schemas/servicemonitor-v1.json" "${args[@]}"

echo "check.sh: all checks passed"
