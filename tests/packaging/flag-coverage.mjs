// flag-coverage: every flag of the built sidecar is a chart value, and the chart has no value for a
// flag the sidecar does not have; the chart's choices (enums) are the sidecar's.
//
//   node flag-coverage.mjs BINARY CHART_DIR ALL_SETTINGS_VALUES.yaml
//
// Flags come from `BINARY --help`. The chart sets some flags itself (listen, metrics, TLS, secrets);
// the rest map one to one to config.<camelCase> keys of values.schema.json. The all-settings value
// set must set every config key, so check-config exercises every flag.
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import YAML from "yaml";

const CHART_MANAGED = {
  listen: "listen.host/listen.port",
  "metrics-listen": "metrics.host/metrics.port",
  upstream: "upstream.existingSecret (REDIS_SIDECAR_UPSTREAM from a Secret)",
  requirepass: "auth.existingSecret (REDIS_SIDECAR_REQUIREPASS from a Secret)",
  "tls-ca-file": "tls.caKey",
  "tls-cert-file": "tls.certKey",
  "tls-key-file": "tls.keyKey",
  "tls-server-name": "tls.serverName",
  "tls-insecure-skip-verify": "tls.insecureSkipVerify",
  "check-config": "(CI only)",
  help: "(not a setting)",
  version: "(not a setting)",
};

const kebab = (s) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

const [binary, chart_dir, all_settings] = process.argv.slice(2);
const help = spawnSync(binary, ["--help"], { encoding: "utf8", env: {} });
if (help.status !== 0) {
  console.log(`    FAIL ${binary} --help exited ${help.status}`);
  process.exit(1);
}
const flags = [...help.stdout.matchAll(/^ {2}--([a-z0-9-]+)/gm)].map((m) => m[1]);
const schema = JSON.parse(fs.readFileSync(path.join(chart_dir, "values.schema.json"), "utf8"));
const config_keys = Object.keys(schema.properties.config.properties);
const by_flag = new Map(config_keys.map((k) => [kebab(k), k]));

const problems = [];
for (const flag of flags)
  if (!(flag in CHART_MANAGED) && !by_flag.has(flag))
    problems.push(`--${flag} has no chart value (add config.${flag.replace(/-([a-z0-9])/g, (_, c) => c.toUpperCase())} to values.schema.json and the README)`);
for (const [flag, key] of by_flag)
  if (!flags.includes(flag)) problems.push(`config.${key} maps to --${flag}, which the sidecar does not have`);
for (const flag of Object.keys(CHART_MANAGED))
  if (!["help", "version"].includes(flag) && !flags.includes(flag))
    problems.push(`the chart manages --${flag}, which the sidecar does not have`);
// Choices: the binary names its choices when given a value outside them ("expected a, b or c");
// the schema's enum must be that same set.
for (const [key, prop] of Object.entries(schema.properties.config.properties)) {
  if (!prop.enum || !flags.includes(kebab(key))) continue;
  const r = spawnSync(binary, ["--check-config", "--upstream=redis://choices.invalid:6379", `--${kebab(key)}=not-a-choice`],
                      { encoding: "utf8", env: {} });
  const m = /expected (?:one of: )?(.*)$/m.exec(r.stderr ?? "");
  const choices = m ? m[1].split(/,\s*|\s+or\s+|\s+/).filter(Boolean).sort() : [];
  const schema_choices = [...prop.enum].sort();
  if (!choices.length) problems.push(`--${kebab(key)}: could not read its choices from: ${(r.stderr ?? "").trim()}`);
  else if (choices.join() !== schema_choices.join())
    problems.push(`config.${key} allows ${schema_choices.join(", ")} but --${kebab(key)} takes ${choices.join(", ")}`);
}
const set = Object.keys(YAML.parse(fs.readFileSync(all_settings, "utf8")).config ?? {});
for (const key of config_keys)
  if (!set.includes(key)) problems.push(`${path.basename(all_settings)} does not set config.${key}`);

for (const p of problems) console.log(`    FAIL ${p}`);
if (!problems.length)
  console.log(`    ok   all ${flags.length} flags of --help are chart values (${config_keys.length} under config.*) with the same choices, and all-settings sets each`);
process.exit(problems.length ? 1 : 0);
