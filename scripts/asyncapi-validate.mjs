// Validate AsyncAPI documents with the AsyncAPI project's own parser (@asyncapi/parser).
//
//   node scripts/asyncapi-validate.mjs DOCUMENT...
//
// The parser is looked for in $REQREP_ASYNCAPI_PARSER (a folder npm installed it into with
// --prefix), else /var/cache/reqrep-asyncapi, where .ci/run installs the pinned version.
// Prints each diagnostic as a line of JSON; exits 0 when no document has an error, 1 when one
// has, 2 when the parser cannot be loaded.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const prefix = process.env.REQREP_ASYNCAPI_PARSER || '/var/cache/reqrep-asyncapi';
let Parser;
try {
  ({ Parser } = createRequire(path.join(prefix, 'node_modules', 'x.js'))('@asyncapi/parser'));
} catch (err) {
  console.error(`cannot load @asyncapi/parser from ${prefix}: ${err.message}`);
  process.exit(2);
}

const parser = new Parser();
const severities = ['error', 'warning', 'information', 'hint'];
let failed = false;
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await parser.parse(readFileSync(file, 'utf8'));
  for (const d of diagnostics) {
    const severity = severities[d.severity] ?? String(d.severity);
    console.log(JSON.stringify({ file, severity, code: d.code, message: d.message, path: d.path }));
    if (d.severity === 0) failed = true;
  }
  if (!document) failed = true;
}
process.exit(failed ? 1 : 0);
