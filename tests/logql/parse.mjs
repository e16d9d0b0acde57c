// Parses LogQL expressions with Grafana's parser (@grafana/lezer-logql, what
// Grafana's Loki query editor uses). Input on stdin: a JSON array of
// {"name": ..., "expr": ...}. Output: one line per expression, "ok NAME" or
// "error NAME at OFFSET: CONTEXT". Exit status 1 when any failed to parse.
import { parser } from "@grafana/lezer-logql";
import { readFileSync } from "node:fs";

const items = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const { name, expr } of items) {
  const tree = parser.parse(expr);
  let error = null;
  tree.iterate({
    enter: (node) => {
      if (error === null && node.type.isError) {
        error = node.from;
      }
    },
  });
  // The top node must be a LogQL expression covering the whole input.
  const top = tree.topNode.firstChild;
  if (error === null && (!top || top.to < expr.trimEnd().length)) {
    error = top ? top.to : 0;
  }
  if (error === null) {
    console.log(`ok ${name}`);
  } else {
    failed++;
    const around = expr.slice(Math.max(0, error - 30), error + 30).replace(/\n/g, " ");
    console.log(`error ${name} at ${error}: ...${around}...`);
  }
}
process.exit(failed ? 1 : 0);
