#!/usr/bin/env bash
# Validate the Kubernetes manifests in this directory offline, against the API schemas that
# kubernetes-validate bundles, in strict mode (unknown fields are errors), for the oldest and
# the newest Kubernetes version this deployment supports. Also checks that
# kustomization.yaml lists exactly the manifests here, and that no manifest repeats a key
# (YAML parsers keep the last one silently).
#
# Needs: pip install kubernetes-validate   (no network access while it runs). When kubectl is
# installed, the kustomization is also rendered (kubectl kustomize, offline) and validated.
# Usage: deploy/k8s/check.sh   (from any directory)
set -euo pipefail
cd "$(dirname "$0")"

versions=(1.29.0 1.37.0)

if ! python3 -c 'import kubernetes_validate, yaml' 2>/dev/null; then
  echo "check.sh: kubernetes-validate not found for python3; pip install kubernetes-validate" >&2
  exit 2
fi

manifests=()
for f in *.yaml; do
  [[ "$f" == kustomization.yaml ]] || manifests+=("$f")
done

# Every resource of kustomization.yaml exists and every manifest is a resource; no key twice.
python3 - "${manifests[@]}" <<'PY'
import sys
import yaml

class UniqueKeys(yaml.SafeLoader):
    pass

def mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} repeated", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)

UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)

failed = False
for name in ["kustomization.yaml", *sys.argv[1:]]:
    try:
        with open(name) as f:
            docs = [d for d in yaml.load_all(f, Loader=UniqueKeys) if d is not None]
    except yaml.YAMLError as e:
        print(f"ERROR {name}: {e}")
        failed = True
        continue
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            print(f"ERROR {name}: a document without kind and apiVersion")
            failed = True
        elif d.get("metadata", {}).get("namespace"):
            print(f"ERROR {name}: {d['kind']} names a namespace; apply with -n instead")
            failed = True

with open("kustomization.yaml") as f:
    listed = yaml.safe_load(f).get("resources", [])
for name in sorted(set(sys.argv[1:]) - set(listed)):
    print(f"ERROR {name} is not listed in kustomization.yaml")
    failed = True
for name in sorted(set(listed) - set(sys.argv[1:])):
    print(f"ERROR kustomization.yaml lists {name}, which is not here")
    failed = True
sys.exit(1 if failed else 0)
PY

# kubernetes-validate only warns (and exits 0) for a kind it has no schema for: an unchecked
# manifest is a failure here.
args=(--strict)
for v in "${versions[@]}"; do args+=(-k "$v"); done
validate() {
  local out status=0
  out="$(python3 -m kubernetes_validate "${args[@]}" "$@")" || status=$?
  echo "$out"
  [[ $status -eq 0 ]] && ! grep -qv '^INFO ' <<<"$out"
}
if ! validate "${manifests[@]}"; then
  echo "check.sh: manifests do not validate" >&2
  exit 1
fi
if command -v kubectl >/dev/null 2>&1; then
  rendered="$(mktemp)"
  trap 'rm -f "$rendered"' EXIT
  kubectl kustomize . >"$rendered"
  if ! validate "$rendered" | sed "s|$rendered|kustomize output|"; then
    echo "check.sh: the kustomization's output does not validate" >&2
    exit 1
  fi
else
  echo "check.sh: kubectl not installed; kustomization not rendered"
fi
echo "check.sh: ${#manifests[@]} manifests valid against Kubernetes ${versions[*]} (strict)"
