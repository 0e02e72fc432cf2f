// pod: finds the redis-sidecar container in a rendered pod spec and reads what the checks need
// from it. The sidecar is the container that takes REDIS_SIDECAR_UPSTREAM from a Secret; it is an
// init container (native sidecar) or a regular container (classic).

/// The pod template spec of a workload object, or null.
export function pod_spec(obj) {
  if (obj.kind === "Pod") return obj.spec ?? null;
  return obj.spec?.template?.spec ?? null;
}

export function pod_labels(obj) {
  if (obj.kind === "Pod") return obj.metadata?.labels ?? {};
  return obj.spec?.template?.metadata?.labels ?? {};
}

export function pod_annotations(obj) {
  if (obj.kind === "Pod") return obj.metadata?.annotations ?? {};
  return obj.spec?.template?.metadata?.annotations ?? {};
}

function is_sidecar(container) {
  return (container.env ?? []).some((e) => e.name === "REDIS_SIDECAR_UPSTREAM");
}

/// Every sidecar container of a pod spec: [{ container, init }].
export function find_sidecars(spec) {
  const found = [];
  for (const c of spec.initContainers ?? []) if (is_sidecar(c)) found.push({ container: c, init: true });
  for (const c of spec.containers ?? []) if (is_sidecar(c)) found.push({ container: c, init: false });
  return found;
}

/// The value of --name=value (or "--name value") in args; the last one wins, as in the sidecar.
export function flag_value(args, name) {
  let value;
  for (let i = 0; i < args.length; ++i) {
    const a = String(args[i]);
    if (a.startsWith(`--${name}=`)) value = a.slice(name.length + 3);
    else if (a === `--${name}` && i + 1 < args.length && !String(args[i + 1]).startsWith("--"))
      value = String(args[++i]);
  }
  return value;
}

/// The port of "host:port" / "[v6]:port".
export function port_of(address) {
  const m = /:(\d+)$/.exec(address ?? "");
  return m ? Number(m[1]) : undefined;
}

/// True when every key/value of `selector` is in `labels`.
export function selects(selector, labels) {
  return Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);
}
