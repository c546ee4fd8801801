// Copies the latest full run (results/latest.json and latest.md) into README.md, between the
// RESULTS markers: the machine, the servers, the tables and the chart.
//
//   node src/update-readme.ts        (pnpm readme)
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { BenchReport } from "./report.ts";

const dir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const report = JSON.parse(readFileSync(join(dir, "results", "latest.json"), "utf8")) as BenchReport;
const tables = readFileSync(join(dir, "results", "latest.md"), "utf8")
  // The first lines repeat what the machine section says; the rest are the tables.
  .replace(/^## .*\n\n/, "")
  .replace(/^(Machine|Servers): .*\n/gm, "")
  .replace(/^### /gm, "#### ")
  // A note printed right under a table must not read as one more row of it.
  .replace(/(\|\n)( {2}\S)/g, "$1\n$2");
const m = report.machine;
const servers = Object.entries(report.servers)
  .map(
    ([k, s]) =>
      `- ${k}: ${s.server}${s.version ? ` ${s.version}` : ""}${s.source && s.source !== "in-process" ? ` (${s.source})` : ""}`,
  )
  .join("\n");
const peers = report.peers.map((p) => `${p.peer} ${p.version}`).join(", ");
const block = `<!-- RESULTS:START -->
Run of ${report.startedAt.slice(0, 16).replace("T", " ")} UTC (${report.quick ? "QUICK, small sizes" : "full sizes"}; ${report.durationS} s in all),
\`pnpm bench${report.quick ? " --quick" : ""}\` with the default options.

![Sayiir persistence benchmark](results/latest.svg)

Machine: \`nproc\` = ${m.nproc}, CPU model \`${m.cpuModel}\`, ${m.platform}, Node ${m.node}${peers ? `, ${peers}` : ""}.
Load average when the run ended: ${m.loadAverage.join(" ")}.

\`\`\`
$ free -h
${m.freeH}
\`\`\`

Servers:

${servers}

${tables.trim()}
<!-- RESULTS:END -->`;

const readmePath = join(dir, "README.md");
const readme = readFileSync(readmePath, "utf8");
const updated = readme.replace(/<!-- RESULTS:START -->[\s\S]*<!-- RESULTS:END -->/, block);
if (updated === readme && !readme.includes(block)) throw new Error("README.md has no RESULTS markers");
writeFileSync(readmePath, updated);
process.stdout.write(`README.md updated from the run of ${report.startedAt}\n`);
