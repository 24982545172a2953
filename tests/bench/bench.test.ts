// `npm run bench` at its smallest size: the benchmark runs end to end (real
// engine, local stack) and produces a complete table, every goal line and a
// complete results.json. Whether the goals are met is a measurement, not
// asserted here.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { REPO, toolsEnv } from "../../scripts/lib/pulumiCli";

describe("npm run bench -- --sizes 10", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "pdb-bench-test-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("one table with every row, one line per goal, and results.json", { timeout: 900_000 }, () => {
    const out = path.join(dir, "results.json");
    const r = spawnSync(path.join(REPO, "node_modules", ".bin", "tsx"), [path.join(REPO, "scripts", "bench.ts"), "--sizes", "10", "--previews", "1", "--out", out], {
      cwd: REPO,
      env: toolsEnv(),
      encoding: "utf8",
      timeout: 850_000,
    });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    const lines = r.stdout.trim().split("\n");
    const rows = lines.filter((l) => l.startsWith("| "));
    for (const name of ["data", "bare restart", "upgrade downtime", "downtime / restart", "program backup", "raw tar|gzip|aws s3 cp -", "backup / raw"]) {
      expect(rows.some((l) => l.startsWith(`| ${name} `) && l.includes("| 10 MB ")), name).toBe(true);
    }
    for (const name of ["preview: empty program", "preview: one dynamic resource", "preview: unchanged stack", "preview: config error"]) {
      expect(rows.some((l) => l.startsWith(`| ${name} `) && /\d+\.\d\d s/.test(l)), name).toBe(true);
    }
    const goals = lines.filter((l) => l.startsWith("goal "));
    expect(goals.map((l) => l.split(":")[0])).toEqual(["goal downtime", "goal backup throughput", "goal unchanged preview", "goal config-error preview"]);
    for (const g of goals) expect(g).toMatch(/\(target .+\) (ok|MISSED)$/);

    const json = JSON.parse(readFileSync(out, "utf8"));
    expect(json.sizes).toHaveLength(1);
    const size = json.sizes[0];
    expect(size.sizeMb).toBe(10);
    expect(size.bytes).toBeGreaterThan(10e6);
    expect(size.upExit).toBe(0);
    for (const k of ["restartMedianMs", "downtimeMs", "upMs", "backupMs", "backupMBps", "rawMs", "rawMBps"]) expect(Number.isFinite(size[k]), k).toBe(true);
    expect(size.backupSteps.length).toBeGreaterThan(0);
    for (const k of ["emptyMedianMs", "oneDynamicMedianMs", "unchangedMedianMs", "configErrorMedianMs"]) expect(Number.isFinite(json.previews[k]), k).toBe(true);
    expect(json.previews.configErrorShown).toBe(true);
    expect(json.goals).toHaveLength(4);
  });
});
