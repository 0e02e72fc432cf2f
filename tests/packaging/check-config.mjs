// check-config: runs the built redis-sidecar with exactly the args and env the chart rendered for
// its container, plus --check-config, so a flag the binary does not know, a bad value or a bad
// combination fails here instead of in a crash-looping pod.
//
//   node check-config.mjs --binary BIN --render RENDER.yaml --certs DIR
//        [--values VALUES.yaml] [--secret NAME/KEY=VALUE]... [--expect-fail TEXT]
//
// Secret references are resolved to test values: `--secret` options and `# test-secret:
// NAME/KEY=VALUE` lines in the values file. Secret volumes mounted in the sidecar are recreated in a
// temporary directory from DIR/<item path> (ca.crt, tls.crt, tls.key: real PEM files made by the
// caller), and paths under the mount are rewritten to it. The process sees no other environment
// (a REDIS_URL of the machine running the check cannot leak in).
// Exit 0 when the binary accepts the configuration (or, with --expect-fail, rejects it with TEXT).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { parse_documents } from "./validate-manifests.mjs";
import * as pod from "./lib/pod.mjs";

function parse_args(argv) {
  const opts = { secrets: new Map() };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (name === "--secret") {
      const eq = value.indexOf("=");
      opts.secrets.set(value.slice(0, eq), value.slice(eq + 1));
    } else {
      opts[name.replace(/^--/, "").replace(/-/g, "_")] = value;
    }
  }
  if (opts.values) {
    for (const m of fs.readFileSync(opts.values, "utf8").matchAll(/^# test-secret: ([^=\s]+)=(.*)$/gm))
      opts.secrets.set(m[1], m[2].trim());
  }
  return opts;
}

function resolve_env(container, secrets) {
  const env = {};
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = String(e.value);
    else if (e.valueFrom?.secretKeyRef) {
      const ref = `${e.valueFrom.secretKeyRef.name}/${e.valueFrom.secretKeyRef.key}`;
      if (!secrets.has(ref))
        throw new Error(`no test value for Secret ${ref} (${e.name}): add "# test-secret: ${ref}=..." to the values file`);
      env[e.name] = secrets.get(ref);
    } else throw new Error(`env ${e.name}: only value and secretKeyRef are supported by this check`);
  }
  return env;
}

// Recreates the mounted Secret volumes under `root`; returns [mountPath, local dir] pairs.
function materialize_mounts(container, spec, certs, root) {
  const volumes = new Map((spec.volumes ?? []).map((v) => [v.name, v]));
  const mounts = [];
  for (const m of container.volumeMounts ?? []) {
    const volume = volumes.get(m.name);
    if (!volume?.secret?.items) throw new Error(`volume ${m.name}: only Secret volumes with items are supported`);
    const dir = path.join(root, m.name);
    fs.mkdirSync(dir, { recursive: true });
    for (const item of volume.secret.items) {
      const source = path.join(certs, path.basename(item.path));
      if (!fs.existsSync(source)) throw new Error(`no test file ${source} for ${m.name}/${item.path}`);
      fs.copyFileSync(source, path.join(dir, item.path));
      fs.chmodSync(path.join(dir, item.path), volume.secret.defaultMode ?? 0o644);
    }
    mounts.push([m.mountPath.replace(/\/$/, ""), dir]);
  }
  return mounts;
}

function rewrite(value, mounts) {
  for (const [from, to] of mounts) if (value.includes(`${from}/`)) value = value.split(`${from}/`).join(`${to}/`);
  return value;
}

function run_one(obj, opts, root) {
  const spec = pod.pod_spec(obj);
  const found = pod.find_sidecars(spec);
  if (found.length !== 1) throw new Error(`${obj.kind}/${obj.metadata.name}: ${found.length} sidecar containers`);
  const c = found[0].container;
  const mounts = materialize_mounts(c, spec, opts.certs, path.join(root, obj.metadata.name));
  const args = (c.args ?? []).map((a) => rewrite(String(a), mounts));
  const env = Object.fromEntries(Object.entries(resolve_env(c, opts.secrets)).map(([k, v]) => [k, rewrite(v, mounts)]));
  const r = spawnSync(opts.binary, [...args, "--check-config"], { env, encoding: "utf8", timeout: 10000 });
  const out = `${r.stdout ?? ""}${r.stderr ?? ""}`.trim();
  console.log(`    ${c.name} in ${obj.kind}/${obj.metadata.name}: ${args.join(" ")} --check-config`);
  console.log(`      env: ${Object.keys(env).join(", ") || "(none)"}`);
  console.log(`      exit ${r.status}: ${out}`);
  if (opts.expect_fail !== undefined) {
    const ok = r.status === 2 && out.includes(opts.expect_fail);
    console.log(`    ${ok ? "ok  " : "FAIL"} rejected as expected ("${opts.expect_fail}")`);
    return ok;
  }
  const ok = r.status === 0 && /^configuration OK/m.test(r.stdout ?? "");
  console.log(`    ${ok ? "ok  " : "FAIL"} accepted`);
  return ok;
}

function main() {
  const opts = parse_args(process.argv.slice(2));
  const workloads = parse_documents(fs.readFileSync(opts.render, "utf8")).filter((d) => pod.pod_spec(d));
  if (!workloads.length) throw new Error("the render has no workload with the sidecar");
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "redis-sidecar-check-config-"));
  let results;
  try {
    results = workloads.map((w) => run_one(w, opts, root));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  process.exit(results.every(Boolean) ? 0 : 1);
}

try {
  main();
} catch (e) {
  console.log(`    FAIL ${e.message}`);
  process.exit(1);
}
