// hook-command: prints, one argument per line, the exec command of the sidecar's lifecycle hook
// (postStart or preStop) in a render, so run.sh can run it inside the image.
//
//   node hook-command.mjs RENDER.yaml postStart|preStop
import fs from "node:fs";
import { parse_documents } from "./validate-manifests.mjs";
import * as pod from "./lib/pod.mjs";

const [file, hook] = process.argv.slice(2);
const workload = parse_documents(fs.readFileSync(file, "utf8")).find((d) => pod.pod_spec(d));
const sidecar = workload && pod.find_sidecars(pod.pod_spec(workload))[0];
const command = sidecar?.container.lifecycle?.[hook]?.exec?.command;
if (!command) {
  console.error(`no ${hook} exec hook on the sidecar in ${file}`);
  process.exit(1);
}
console.log(command.join("\n"));
