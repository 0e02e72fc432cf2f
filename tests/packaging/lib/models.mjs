// models: offline validation of Kubernetes objects with the npm kubernetes-models packages.
//
// validate_object() runs the package's own schema check (types, required fields, enums) and adds
// what that check leaves out: unknown fields. A misspelt field (`readinessprobe`, `restartpolicy`)
// passes the schema check and is silently dropped by the API server, so it is the mistake a chart
// most needs caught. Allowed field names come from the models' TypeScript declarations (one class
// per file, one `"field"?: Type;` line per field, imports naming the file of each nested type).
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const here = path.dirname(new URL(import.meta.url).pathname);
const node_modules = path.resolve(here, "..", "node_modules");

// apiVersion -> directory of its models.
function model_dir(api_version) {
  if (api_version === "v1") return path.join(node_modules, "kubernetes-models", "v1");
  const [group, version] = api_version.split("/");
  if (group.endsWith("coreos.com"))
    return path.join(node_modules, "@kubernetes-models", "prometheus-operator", group, version);
  return path.join(node_modules, "kubernetes-models", group, version);
}

export async function load_model(api_version, kind) {
  const file = path.join(model_dir(api_version), `${kind}.js`);
  if (!fs.existsSync(file)) return null;
  const module = await import(file);
  return { model: module[kind], dts: file.replace(/\.js$/, ".d.ts") };
}

// ---- field names from the declarations -------------------------------------------------------------

const declarations = new Map();  // .d.ts path -> { fields: Map(name -> type text), imports: Map }

function resolve_import(spec, from_file) {
  if (spec.startsWith(".")) return path.resolve(path.dirname(from_file), spec.replace(/\.js$/, ".d.ts"));
  const require = createRequire(from_file);
  try {
    return require.resolve(spec).replace(/\.js$/, ".d.ts");
  } catch {
    const candidate = path.join(node_modules, `${spec}.d.ts`);
    return fs.existsSync(candidate) ? candidate : null;
  }
}

// The class block lists every field, inherited ones included. A field whose type is an inline
// object literal spans several lines; its type is recorded as "{" and not descended into.
function parse_declaration(file) {
  if (declarations.has(file)) return declarations.get(file);
  const text = fs.readFileSync(file, "utf8");
  const imports = new Map();
  for (const m of text.matchAll(/^import (?:type )?\{ ([^}]+) \} from "([^"]+)";$/gm)) {
    for (const name of m[1].split(",").map((s) => s.trim().split(" as ").pop()))
      imports.set(name, resolve_import(m[2], file));
  }
  const fields = new Map();
  const start = text.search(/^export declare class \w+/m);
  if (start >= 0) {
    for (const line of text.slice(start).split("\n").slice(1)) {
      if (line === "}") break;
      const m = line.match(/^ {4}"([^"]+)"\??: (.*)$/);
      if (m) fields.set(m[1], m[2].replace(/;$/, ""));
    }
  }
  const result = { fields, imports, has_class: start >= 0 };
  declarations.set(file, result);
  return result;
}

// Walks `value` against the declaration in `file`; pushes "path: unknown field x" to `errors`.
function check_fields(value, file, where, errors) {
  if (value === null || typeof value !== "object" || file === null || !fs.existsSync(file)) return;
  const decl = parse_declaration(file);
  if (!decl.has_class) return;  // a type alias (IntOrString, Quantity, ...): nothing to walk
  for (const [key, child] of Object.entries(value)) {
    const type = decl.fields.get(key);
    if (type === undefined) {
      errors.push(`${where}: unknown field "${key}"`);
      continue;
    }
    const array = type.match(/^Array<(\w+)>$/);
    const name = array ? array[1] : type;
    if (!/^I\w+$/.test(name) || !decl.imports.has(name)) continue;
    const target = decl.imports.get(name);
    if (array && Array.isArray(child))
      child.forEach((item, n) => check_fields(item, target, `${where}.${key}[${n}]`, errors));
    else if (!array) check_fields(child, target, `${where}.${key}`, errors);
  }
}

/// Validates one object. Returns a list of error strings (empty when valid).
export async function validate_object(obj) {
  if (!obj || typeof obj !== "object" || !obj.apiVersion || !obj.kind)
    return ["not a Kubernetes object (apiVersion and kind are required)"];
  const loaded = await load_model(obj.apiVersion, obj.kind);
  if (!loaded) return [`no model for ${obj.apiVersion} ${obj.kind} (unknown or misspelt kind)`];
  const errors = [];
  try {
    new loaded.model(obj).validate();
  } catch (e) {
    errors.push(`schema: ${e.message}`);
  }
  check_fields(obj, loaded.dts, obj.kind, errors);
  return errors;
}
