// validate-manifests: checks a `helm template` render of the redis-sidecar chart, offline.
//
//   node validate-manifests.mjs RENDER.yaml [--expect-kinds Deployment,PodMonitor,...]
//
// 1. Every document against the Kubernetes / Prometheus Operator schemas of the npm
//    kubernetes-models packages, plus unknown fields (lib/models.mjs).
// 2. What the chart promises about the sidecar and its wiring, on the rendered objects: exactly one
//    sidecar per pod, placed as a native sidecar (init container, restartPolicy Always) or a
//    classic container listed first; the upstream URL and password only from Secrets; the restrictive
//    securityContext; probes on the metrics port; TLS files mounted where the flags point; the
//    app's REDIS_URL on the sidecar's listen port; scrape annotations, monitors and Services
//    pointing at pods and ports that exist; alert rules and dashboard well formed.
// Prints one line per document and exits 1 on any problem.
import fs from "node:fs";
import YAML from "yaml";
import { validate_object } from "./lib/models.mjs";
import * as pod from "./lib/pod.mjs";

function check_security(c, spec, err) {
  const sc = c.securityContext ?? {};
  const psc = spec.securityContext ?? {};
  if ((sc.runAsNonRoot ?? psc.runAsNonRoot) !== true) err("runAsNonRoot is not true");
  if (sc.readOnlyRootFilesystem !== true) err("readOnlyRootFilesystem is not true");
  if (sc.allowPrivilegeEscalation !== false) err("allowPrivilegeEscalation is not false");
  if (sc.privileged === true) err("privileged");
  if (!(sc.capabilities?.drop ?? []).includes("ALL")) err("capabilities.drop lacks ALL");
  if (sc.capabilities?.add?.length) err(`capabilities added: ${sc.capabilities.add}`);
  const seccomp = sc.seccompProfile?.type ?? psc.seccompProfile?.type;
  if (seccomp !== "RuntimeDefault" && seccomp !== "Localhost") err(`seccompProfile is ${seccomp}`);
  if (!c.resources?.requests?.memory || !c.resources?.limits?.memory)
    err("memory request and limit must be set");
}

function check_env(c, err) {
  for (const name of ["REDIS_SIDECAR_UPSTREAM", "REDIS_SIDECAR_REQUIREPASS"]) {
    const e = (c.env ?? []).filter((v) => v.name === name);
    if (name === "REDIS_SIDECAR_UPSTREAM" && e.length !== 1) err(`${name} set ${e.length} times`);
    for (const v of e) {
      if (v.value !== undefined) err(`${name} has a plain value; it must come from a Secret`);
      const ref = v.valueFrom?.secretKeyRef;
      if (!ref?.name || !ref?.key) err(`${name} is not a secretKeyRef with name and key`);
    }
  }
  for (const flag of ["upstream", "requirepass"])
    if (pod.flag_value(c.args ?? [], flag) !== undefined) err(`--${flag} in args (secrets come from Secrets)`);
}

function check_probes(c, err) {
  const ports = new Map((c.ports ?? []).map((p) => [p.name, p.containerPort]));
  const metrics_port = pod.port_of(pod.flag_value(c.args ?? [], "metrics-listen"));
  if (metrics_port === undefined) err("no --metrics-listen HOST:PORT in args");
  const expected = { startupProbe: "/healthz", livenessProbe: "/healthz", readinessProbe: "/readyz" };
  for (const [probe, path] of Object.entries(expected)) {
    const get = c[probe]?.httpGet;
    if (!c[probe]) continue;
    if (!get) err(`${probe} is not an httpGet probe`);
    else {
      if (get.path !== path) err(`${probe} path ${get.path}, expected ${path}`);
      const port = typeof get.port === "string" ? ports.get(get.port) : get.port;
      if (port === undefined) err(`${probe} port ${get.port} is not a port of the container`);
      else if (port !== metrics_port) err(`${probe} port ${port} is not the metrics port ${metrics_port}`);
    }
  }
  return metrics_port;
}

// Every --tls-*-file must lie in a mounted Secret volume that projects that file name.
function check_tls_files(c, spec, err) {
  const volumes = new Map((spec.volumes ?? []).map((v) => [v.name, v]));
  for (const m of c.volumeMounts ?? [])
    if (!volumes.has(m.name)) err(`volumeMount ${m.name} has no pod volume`);
  for (const flag of ["tls-ca-file", "tls-cert-file", "tls-key-file"]) {
    const file = pod.flag_value(c.args ?? [], flag);
    if (file === undefined) continue;
    const mount = (c.volumeMounts ?? []).find((m) => file.startsWith(`${m.mountPath.replace(/\/$/, "")}/`));
    const volume = mount && volumes.get(mount.name);
    const rel = mount && file.slice(mount.mountPath.replace(/\/$/, "").length + 1);
    if (!volume?.secret) err(`--${flag}=${file} is not in a mounted Secret volume`);
    else if (volume.secret.items && !volume.secret.items.some((i) => i.path === rel))
      err(`--${flag}=${file}: the Secret volume ${volume.name} does not project ${rel}`);
  }
}

function check_pod(obj, report) {
  const spec = pod.pod_spec(obj);
  const sidecars = pod.find_sidecars(spec);
  if (sidecars.length !== 1) return report(`${sidecars.length} redis-sidecar containers in the pod, expected 1`);
  const { container: c, init } = sidecars[0];
  const err = (m) => report(`sidecar ${c.name}: ${m}`);
  if (init && c.restartPolicy !== "Always") err("an init container without restartPolicy: Always");
  if (!init && c.restartPolicy !== undefined) err("restartPolicy on a regular container");
  // The kubelet starts containers in order and waits for each postStart hook: a sidecar whose hook
  // holds the app back must come before it.
  if (!init && c.lifecycle?.postStart && spec.containers.indexOf(c) !== 0)
    err("has a postStart hook but is listed after another container, so it holds nothing back");
  check_security(c, spec, err);
  check_env(c, err);
  const metrics_port = check_probes(c, err);
  check_tls_files(c, spec, err);

  const all = [...(spec.initContainers ?? []), ...(spec.containers ?? [])];
  const names = all.map((x) => x.name);
  if (new Set(names).size !== names.length) report(`duplicate container names: ${names}`);
  const port_names = all.flatMap((x) => (x.ports ?? []).map((p) => p.name).filter(Boolean));
  if (new Set(port_names).size !== port_names.length) report(`duplicate port names: ${port_names}`);
  const listen_port = pod.port_of(pod.flag_value(c.args ?? [], "listen"));
  for (const x of all) {
    for (const e of x.env ?? []) {
      if (typeof e.value === "string" && /^rediss?:\/\/[^/@]*@/.test(e.value))
        report(`container ${x.name}: ${e.name} holds credentials in a plain value`);
      if (e.name === "REDIS_URL" && x !== c) {
        const m = /^redis:\/\/(localhost|127\.0\.0\.1|\[::1\]):(\d+)$/.exec(e.value ?? "");
        if (!m) report(`container ${x.name}: REDIS_URL ${e.value} is not redis://localhost:PORT`);
        else if (Number(m[2]) !== listen_port)
          report(`container ${x.name}: REDIS_URL port ${m[2]} is not the sidecar's --listen port ${listen_port}`);
      }
    }
  }
  const annotations = pod.pod_annotations(obj);
  if (annotations["prometheus.io/port"] !== undefined && Number(annotations["prometheus.io/port"]) !== metrics_port)
    report(`prometheus.io/port ${annotations["prometheus.io/port"]} is not the metrics port ${metrics_port}`);
  const drain_s = Number(pod.flag_value(c.args ?? [], "command-timeout-ms") ?? 5000) / 1000;
  const pre_stop = Number(c.lifecycle?.preStop?.exec?.command?.at(-1) ?? 0);
  const grace = spec.terminationGracePeriodSeconds ?? 30;
  if (grace < pre_stop + drain_s)
    report(`terminationGracePeriodSeconds ${grace} < preStop ${pre_stop}s + drain ${drain_s}s`);
}

// Monitors, Services, rules and dashboards against the pods and Services of the same render.
function check_wiring(doc, docs, report) {
  const pods = docs.filter((d) => pod.pod_spec(d));
  const pod_ports = (d) => [...(pod.pod_spec(d).initContainers ?? []), ...pod.pod_spec(d).containers].flatMap((c) => c.ports ?? []);
  const selected = (selector) => pods.filter((p) => pod.selects(selector, pod.pod_labels(p)));
  if (doc.kind === "PodMonitor" && pods.length) {
    const targets = selected(doc.spec.selector?.matchLabels);
    if (!targets.length) report("selects no pod of this render");
    for (const ep of doc.spec.podMetricsEndpoints ?? [])
      for (const t of targets)
        if (!pod_ports(t).some((p) => p.name === ep.port)) report(`port ${ep.port} is not a container port`);
  }
  if (doc.kind === "Service" && pods.length) {
    const targets = selected(doc.spec.selector);
    if (!targets.length) report("selects no pod of this render");
    for (const sp of doc.spec.ports ?? [])
      for (const t of targets)
        if (typeof sp.targetPort === "string" && !pod_ports(t).some((p) => p.name === sp.targetPort))
          report(`targetPort ${sp.targetPort} is not a container port`);
  }
  if (doc.kind === "ServiceMonitor") {
    const services = docs.filter((d) => d.kind === "Service" && pod.selects(doc.spec.selector?.matchLabels, d.metadata.labels ?? {}));
    if (!services.length) report("selects no Service of this render");
    for (const ep of doc.spec.endpoints ?? [])
      for (const s of services)
        if (!(s.spec.ports ?? []).some((p) => p.name === ep.port)) report(`port ${ep.port} is not a port of Service ${s.metadata.name}`);
  }
  if (doc.kind === "PrometheusRule") {
    const rules = (doc.spec.groups ?? []).flatMap((g) => g.rules ?? []);
    if (!rules.length) report("no rules");
    const alerts = rules.map((r) => r.alert).filter(Boolean);
    if (new Set(alerts).size !== alerts.length) report("duplicate alert names");
    for (const r of rules) if (!(r.alert || r.record) || !r.expr) report(`rule without alert/record or expr: ${JSON.stringify(r).slice(0, 80)}`);
  }
  if (doc.kind === "ConfigMap" && /dashboard/.test(doc.metadata.name)) {
    for (const [key, text] of Object.entries(doc.data ?? {})) {
      try {
        const d = JSON.parse(text);
        if (!Array.isArray(d.panels) || !d.panels.length) report(`${key}: no panels`);
      } catch (e) {
        report(`${key}: not JSON: ${e.message}`);
      }
    }
  }
}

/// Checks parsed documents; returns [{ id, problems }] (one per document, plus missing kinds).
export async function check_documents(docs, expect_kinds = []) {
  const results = [];
  for (const doc of docs) {
    const problems = (await validate_object(doc)).slice();
    const report = (m) => problems.push(m);
    if (!doc.metadata?.labels?.["app.kubernetes.io/name"]) report("no app.kubernetes.io/name label");
    if (pod.pod_spec(doc)) check_pod(doc, report);
    check_wiring(doc, docs, report);
    results.push({ id: `${doc.kind}/${doc.metadata?.name}`, problems });
  }
  const kinds = docs.map((d) => d.kind);
  for (const kind of expect_kinds)
    if (!kinds.includes(kind))
      results.push({ id: kind, problems: [`expected a ${kind} in the render, found: ${kinds.join(", ") || "nothing"}`] });
  return results;
}

export function parse_documents(text) {
  return YAML.parseAllDocuments(text)
    .map((d) => {
      if (d.errors.length) throw new Error(`YAML: ${d.errors[0].message}`);
      return d.toJS();
    })
    .filter((d) => d !== null);
}

async function main() {
  const args = process.argv.slice(2);
  const k = args.indexOf("--expect-kinds");
  const expect_kinds = k >= 0 ? args[k + 1].split(",").map((s) => s.trim()).filter(Boolean) : [];
  const docs = parse_documents(fs.readFileSync(args[0], "utf8"));
  const results = await check_documents(docs, expect_kinds);
  for (const { id, problems } of results) {
    console.log(`    ${problems.length ? "FAIL" : "ok  "} ${id}`);
    for (const p of problems) console.log(`         ${p}`);
  }
  if (!docs.length) console.log("    (no documents rendered)");
  process.exit(results.some((r) => r.problems.length) ? 1 : 0);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => {
    console.log(`    FAIL ${e.message}`);
    process.exit(1);
  });
}
