"""Checks of the rendered overlays that schemas cannot make (run by check.sh).

    check-rendered.py BASE_TOML LB_TOML SCHEMA OVERLAY=RENDERED.yaml...

- ServiceMonitor: kubernetes-validate has no schema for this CRD, so it is
  validated here against the openAPIV3Schema of prometheus-operator's CRD
  (schemas/servicemonitor-v1.json), strictly: unknown fields are errors, as
  the API server's strict field validation makes them. Its selector and
  port must also name a rendered Service and one of its ports.
- gateway.toml: every environment reference in a string value has an env
  variable of the same name in the rendered workload's container, and the
  pods' terminationGracePeriodSeconds exceeds drain_timeout_secs plus the
  15 s of BYEs and CDR flush that follow it.
- The loadbalancer-deployment overlay: its gateway.toml equals the base's
  except [media], and its LoadBalancer Service lists exactly the UDP ports
  of [media] port_min..port_max.
"""

import json
import re
import sys
import tomllib

import jsonschema
import yaml

errors = []


def fail(where, msg):
    errors.append(f"{where}: {msg}")


def strict(schema):
    """Unknown properties are errors wherever the schema lists properties
    and neither allows extra ones nor preserves unknown fields."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")


def env_refs(value, path, out):
    if isinstance(value, str):
        for m in REF.finditer(value):
            if m.group(0) != "$${":
                out.append((m.group(1), path))
    elif isinstance(value, dict):
        for k, v in value.items():
            env_refs(v, f"{path}.{k}" if path else k, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            env_refs(v, f"{path}[{i}]", out)


def check_overlay(name, docs, sm_validator):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    services = by_kind.get("Service", [])
    for sm in by_kind.get("ServiceMonitor", []):
        where = f"{name}: ServiceMonitor/{sm['metadata']['name']}"
        for e in sorted(sm_validator.iter_errors(sm), key=lambda e: list(e.path)):
            fail(where, f"{'.'.join(map(str, e.path)) or '(root)'}: {e.message}")
        sel = sm.get("spec", {}).get("selector", {}).get("matchLabels", {})
        matched = [s for s in services
                   if s["metadata"].get("namespace") == sm["metadata"].get("namespace")
                   and all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        if not matched:
            fail(where, f"selector {sel} matches no rendered Service")
        for ep in sm.get("spec", {}).get("endpoints", []):
            if not any(ep.get("port") == p.get("name")
                       for s in matched for p in s["spec"]["ports"]):
                fail(where, f"endpoint port {ep.get('port')!r} is no port of {[s['metadata']['name'] for s in matched]}")

    configs = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    workloads = by_kind.get("DaemonSet", []) + by_kind.get("Deployment", [])
    if len(workloads) != 1:
        fail(name, f"expected one DaemonSet or Deployment, found {len(workloads)}")
        return None
    w = workloads[0]
    where = f"{name}: {w['kind']}/{w['metadata']['name']}"
    pod = w["spec"]["template"]["spec"]
    container = next((c for c in pod["containers"] if c["name"] == "sip-daemon"), None)
    if container is None:
        fail(where, "no container named sip-daemon")
        return None
    vol = next((v for v in pod.get("volumes", []) if v["name"] == "config"), None)
    cm = configs.get(vol["configMap"]["name"]) if vol and "configMap" in vol else None
    if cm is None or "gateway.toml" not in cm.get("data", {}):
        fail(where, "volume 'config' is no rendered ConfigMap holding gateway.toml")
        return None
    cfg = tomllib.loads(cm["data"]["gateway.toml"])

    refs = []
    env_refs(cfg, "", refs)
    env = {e["name"] for e in container.get("env", [])}
    if container.get("envFrom"):
        fail(where, "envFrom hides which variables exist; list them under env")
    for var, key in refs:
        if var not in env:
            fail(where, f"gateway.toml {key} needs ${{{var}}}, which the container's env does not set")

    drain = cfg.get("sip", {}).get("drain_timeout_secs", 30)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= drain + 15:
        fail(where, f"terminationGracePeriodSeconds {grace} must exceed drain_timeout_secs {drain} + 15")
    return cfg, services


def main():
    base_toml, lb_toml, schema_path, *rendered = sys.argv[1:]
    with open(schema_path) as f:
        schema = strict(json.load(f))
    jsonschema.Draft7Validator.check_schema(schema)
    sm_validator = jsonschema.Draft7Validator(schema)

    for arg in rendered:
        name, path = arg.split("=", 1)
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        got = check_overlay(name, docs, sm_validator)
        if got is None or name != "loadbalancer-deployment":
            continue
        cfg, services = got
        media = cfg.get("media", {})
        want = set(range(media.get("port_min", 20000), media.get("port_max", 40000) + 1))
        lbs = [s for s in services if s["spec"].get("type") == "LoadBalancer"]
        if len(lbs) != 1:
            fail(name, f"expected one LoadBalancer Service, found {len(lbs)}")
            continue
        udp = {p["port"]: p for p in lbs[0]["spec"]["ports"]
               if p.get("protocol", "TCP") == "UDP" and p["port"] != 5060}
        if set(udp) != want:
            fail(name, f"LoadBalancer UDP ports {min(udp, default=None)}..{max(udp, default=None)} "
                       f"({len(udp)}) are not [media] {min(want)}..{max(want)} ({len(want)}): "
                       f"missing {sorted(want - set(udp))[:5]}, extra {sorted(set(udp) - want)[:5]}")
        for port, p in udp.items():
            if p.get("targetPort", port) != port:
                fail(name, f"RTP port {port} targets {p['targetPort']}: the SDP names the pod's own port")

    with open(base_toml, "rb") as f:
        base = tomllib.load(f)
    with open(lb_toml, "rb") as f:
        lb = tomllib.load(f)
    base.pop("media", None)
    lb.pop("media", None)
    if base != lb:
        keys = sorted(k for k in set(base) | set(lb) if base.get(k) != lb.get(k))
        fail(lb_toml, f"differs from {base_toml} outside [media], in {keys}")

    for e in errors:
        print(f"FAIL {e}")
    if errors:
        return 1
    print(f"ok: ServiceMonitor schema (prometheus-operator v0.93.0), env references, "
          f"grace periods, RTP ports and config drift checked for {len(rendered)} rendered overlays")
    return 0


if __name__ == "__main__":
    sys.exit(main())
