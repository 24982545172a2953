// Loaded before the program (Pulumi.yaml: nodeargs --require): Node keeps the
// compiled code of every module it loads (the SDK, TypeScript, ts-node, the
// program) in node_modules/.cache, so that later runs skip compiling it again:
// ~0.2 s of every preview. A cache that cannot be written only costs that time.
const path = require("node:path");
require("node:module").enableCompileCache?.(path.join(__dirname, "..", "node_modules", ".cache", "progressdb-upgrades", "node-compile"));
