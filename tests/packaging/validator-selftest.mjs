// validator-selftest: proves the manifest checks can fail. Takes a render that passes
// validate-manifests (both sidecar forms and every optional object), breaks it in one way at a
// time, and requires each broken copy to be reported. A check that passes everything fails here.
//
//   node validator-selftest.mjs GOOD_RENDER.yaml
import fs from "node:fs";
import { check_documents, parse_documents } from "./validate-manifests.mjs";
import * as pod from "./lib/pod.mjs";

const sidecar = (docs) => pod.find_sidecars(pod.pod_spec(docs.find((d) => d.kind === "Deployment")))[0];
const app = (docs) => pod.pod_spec(docs.find((d) => d.kind === "Deployment")).containers.find((c) => c.name === "app");
const of_kind = (docs, kind) => docs.find((d) => d.kind === kind);
const env = (c, name) => c.env.find((e) => e.name === name);

// [what breaks, how to break it, what the report must mention]
const mutations = [
  ["classic sidecar after the app", (d) => {
    const spec = pod.pod_spec(d.find((x) => x.kind === "Deployment"));
    const s = spec.initContainers.shift();
    delete s.restartPolicy;
    s.lifecycle = { postStart: { exec: { command: ["true"] } } };
    spec.containers.push(s);
  }, "listed after another container"],
  ["misspelt field", (d) => { sidecar(d).container.readinessprobe = sidecar(d).container.readinessProbe; }, "unknown field"],
  ["wrong type", (d) => { sidecar(d).container.ports[0].containerPort = "9379"; }, "must be integer"],
  ["native sidecar without restartPolicy", (d) => { delete sidecar(d).container.restartPolicy; }, "restartPolicy"],
  ["upstream as a plain value", (d) => { const e = env(sidecar(d).container, "REDIS_SIDECAR_UPSTREAM"); delete e.valueFrom; e.value = "rediss://u:p@h:6380"; }, "plain value"],
  ["--upstream in args", (d) => { sidecar(d).container.args.push("--upstream=redis://h:6379"); }, "--upstream in args"],
  ["writable root filesystem", (d) => { sidecar(d).container.securityContext.readOnlyRootFilesystem = false; }, "readOnlyRootFilesystem"],
  ["capabilities kept", (d) => { sidecar(d).container.securityContext.capabilities.drop = []; }, "drop lacks ALL"],
  ["no memory limit", (d) => { delete sidecar(d).container.resources.limits; }, "memory request and limit"],
  ["readiness on /healthz", (d) => { sidecar(d).container.readinessProbe.httpGet.path = "/healthz"; }, "expected /readyz"],
  ["probe on an unknown port", (d) => { sidecar(d).container.livenessProbe.httpGet.port = "nope"; }, "not a port of the container"],
  ["app on another port", (d) => { env(app(d), "REDIS_URL").value = "redis://localhost:6390"; }, "not the sidecar's --listen port"],
  ["two sidecars", (d) => { const s = sidecar(d); pod.pod_spec(d.find((x) => x.kind === "Deployment")).containers.push({ ...s.container, name: "second", restartPolicy: undefined }); }, "2 redis-sidecar containers"],
  ["TLS file outside the mount", (d) => { sidecar(d).container.args.push("--tls-ca-file=/elsewhere/ca.crt"); }, "not in a mounted Secret volume"],
  ["scrape annotation on the wrong port", (d) => { d.find((x) => x.kind === "Deployment").spec.template.metadata.annotations["prometheus.io/port"] = "1234"; }, "not the metrics port"],
  ["PodMonitor selects nothing", (d) => { of_kind(d, "PodMonitor").spec.selector.matchLabels = { app: "other" }; }, "selects no pod"],
  ["ServiceMonitor on a missing port", (d) => { of_kind(d, "ServiceMonitor").spec.endpoints[0].port = "http"; }, "is not a port of Service"],
  ["rule without expr", (d) => { delete of_kind(d, "PrometheusRule").spec.groups[0].rules[0].expr; }, "expr"],
  ["dashboard not JSON", (d) => { const cm = of_kind(d, "ConfigMap"); const k = Object.keys(cm.data)[0]; cm.data[k] = "{"; }, "not JSON"],
];

const text = fs.readFileSync(process.argv[2], "utf8");
const baseline = await check_documents(parse_documents(text));
let failures = 0;
if (baseline.some((r) => r.problems.length)) {
  console.log("    FAIL the unbroken render does not pass; fix that first");
  failures += 1;
}
for (const [what, breakit, expected] of mutations) {
  const docs = parse_documents(text);
  breakit(docs);
  const problems = (await check_documents(docs)).flatMap((r) => r.problems);
  const caught = problems.some((p) => p.includes(expected));
  console.log(`    ${caught ? "ok  " : "FAIL"} caught: ${what}${caught ? "" : ` (report: ${problems.join("; ") || "nothing"})`}`);
  failures += caught ? 0 : 1;
}
process.exit(failures ? 1 : 0);
