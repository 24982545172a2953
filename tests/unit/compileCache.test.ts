// components/compileCache.cjs, which Pulumi.yaml's nodeargs load before the program: Node keeps
// the compiled code of every module in node_modules/.cache between runs.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, test } from "vitest";
import { REPO } from "../../scripts/lib/pulumiCli";

describe("the compile cache the program runs with", () => {
  test("Pulumi.yaml loads it before the program", () => {
    const nodeargs = /^\s*nodeargs:\s*(.+)$/m.exec(readFileSync(path.join(REPO, "Pulumi.yaml"), "utf8"))?.[1] ?? "";
    expect(nodeargs.split(/\s+/)).toEqual(expect.arrayContaining(["--require", "./components/compileCache.cjs"]));
  });

  test("loaded with --require from the project's directory, it turns Node's compile cache on in node_modules/.cache", () => {
    const r = spawnSync(process.execPath, ["--require", "./components/compileCache.cjs", "-e", "console.log(require('node:module').getCompileCacheDir())"], {
      cwd: REPO,
      encoding: "utf8",
    });
    expect(r.status, r.stderr).toBe(0);
    // (Node adds a directory per Node version and build.)
    expect(path.dirname(r.stdout.trim())).toBe(path.join(REPO, "node_modules", ".cache", "progressdb-upgrades", "node-compile"));
  });
});
