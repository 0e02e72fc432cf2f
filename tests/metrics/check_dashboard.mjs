// Checks metrics/dashboard.json and prints every PromQL expression in it as a Prometheus recording
// rule file (JSON, which is YAML), so `promtool check rules` can parse the queries. Grafana's
// variables are replaced by plain values first. Exit 1 with a message on the first structural
// problem: panels must use the ${DS_PROMETHEUS} data source variable so the dashboard imports
// anywhere, ids must be unique, panels must fit the 24-column grid.
import { readFileSync } from 'node:fs';

const path = process.argv[2];
const fail = (msg) => { console.error(`${path}: ${msg}`); process.exit(1); };
let dash;
try { dash = JSON.parse(readFileSync(path, 'utf8')); } catch (e) { fail(`not valid JSON: ${e.message}`); }

const vars = dash.templating?.list ?? [];
const ds = vars.find((v) => v.name === 'DS_PROMETHEUS');
if (!ds || ds.type !== 'datasource' || ds.query !== 'prometheus')
  fail('needs a templating variable DS_PROMETHEUS of type datasource (query: prometheus)');
const usesVariable = (d, where) => {
  if (d?.uid !== '${DS_PROMETHEUS}') fail(`${where}: datasource must be {"uid": "\${DS_PROMETHEUS}"}`);
};

const substitute = (expr) => expr
  .replaceAll('$__rate_interval', '5m').replaceAll('$__interval', '1m')
  .replaceAll('$__range', '1h').replaceAll('$instance', '.*');

const rules = [];
const ids = new Set();
for (const p of dash.panels ?? []) {
  if (ids.has(p.id)) fail(`panel id ${p.id} is used twice`);
  ids.add(p.id);
  const g = p.gridPos;
  if (!g || g.x < 0 || g.w < 1 || g.x + g.w > 24) fail(`panel "${p.title}": gridPos outside 24 columns`);
  if (p.type === 'row') continue;
  usesVariable(p.datasource, `panel "${p.title}"`);
  if (!p.targets?.length) fail(`panel "${p.title}" has no query`);
  for (const t of p.targets) {
    usesVariable(t.datasource, `panel "${p.title}" query ${t.refId}`);
    rules.push({ record: `dashboard:panel_${p.id}:${t.refId}`, expr: substitute(t.expr) });
  }
}
for (const v of vars.filter((x) => x.type === 'query')) usesVariable(v.datasource, `variable ${v.name}`);
for (const [i, a] of (dash.annotations?.list ?? []).entries()) {
  usesVariable(a.datasource, `annotation "${a.name}"`);
  rules.push({ record: `dashboard:annotation_${i}`, expr: substitute(a.expr) });
}
console.log(JSON.stringify({ groups: [{ name: 'dashboard', rules }] }, null, 1));
