// The real engine end to end, on the local stack: deployed over real SSH to
// the ProgressDB stand-in's releases (which behave like the real 0.1.x and
// 0.2.x: see tests/contract), backups to MinIO, upgraded and rolled back by
// editing progressdb:version and running the real `pulumi` CLI. The stand-in
// also gives what the real releases cannot on demand: a prgcli with the
// duplicate-message bug switched on (0.2.3 here), and a release that silently
// serves an empty store (0.2.4).
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { EngineWorld, filesHoldingSecrets, secretLeaks, startEngineWorld } from "./engineWorld";
import { WrittenThread, deleteThread, readBodies, readyz, waitForBodies, writeThread } from "../fixtures/progressdbApi";

describe("the local stack through the 0.1 → 0.2 data format (real engine, stand-in releases)", { timeout: 240_000 }, () => {
  let w: EngineWorld;
  let at012: WrittenThread;
  let at021: WrittenThread;

  beforeAll(async () => {
    w = await startEngineWorld({
      versions: ["0.1.2", "0.2.1", { version: "0.2.3", prgcliFault: "duplicate-messages" }, { version: "0.2.4", fault: "empty-store" }],
    });
  });
  afterAll(async () => {
    await w?.stop();
  });

  test("up at 0.1.2: proved by the listening binary's identity (0.1.2 has no /readyz), smoke test passed", async () => {
    expect((await w.stack.up()).code).toBe(0);
    const out = await w.stack.outputs();
    expect(out).toMatchObject({ version: "0.1.2", healthStatus: "healthy" });
    expect(out.versionProof).toMatch(new RegExp(`^host: pid \\d+ listening on port \\d+ runs ${w.installDir}/releases/0\\.1\\.2/progressdb \\(sha256 [0-9a-f]{64}, equal to releases/0\\.1\\.2/progressdb`));
    expect((await readyz(w.url)).status).toBe(401);
    // The config the program rendered sits next to the release, 0600; the service's environment holds no secret.
    const config = path.join(w.installDir, "releases", "0.1.2", "config.yaml");
    expect(statMode(config)).toBe(0o600);
    expect(readFileSync(`/proc/${w.pid()}/environ`, "latin1")).not.toMatch(new RegExp(w.secretValues().slice(0, 4).join("|")));
    at012 = await writeThread(w.api("0.1.2"), 2);
  });

  test("preview of 0.2.1 shows the whole chain, the migration included", async () => {
    w.stack.setVersionLine("0.2.1");
    const preview = await w.stack.preview(["--json"]);
    const j = JSON.parse(preview.stdout) as { steps: Array<{ op: string; urn: string }>; diagnostics?: Array<{ message: string }> };
    const changed = j.steps.filter((s) => s.op !== "same" && s.op !== "read").map((s) => `${s.op} ${s.urn.split("::").pop()}`).sort();
    expect(changed).toEqual(
      expect.arrayContaining([
        "replace progressdb-preflight-check",
        "replace progressdb-snapshot",
        "replace progressdb-backup-upload",
        "create progressdb-migrate-data",
        "replace progressdb-deploy-install",
        "replace progressdb-health",
        "replace progressdb-finalize-commit",
      ]),
    );
    expect(JSON.stringify(j.diagnostics ?? [])).toMatch(/crosses the data format[^"]*migrated offline with prgcli 0\.2\.1/);
  });

  test("a migration with prgcli's duplicate bug fails the update, and 0.1.2 runs again on its own data", async () => {
    w.stack.setVersionLine("0.2.3");
    const up = await w.stack.up([], { allowFailure: true });
    expect(up.code).not.toBe(0);
    expect(up.stdout + up.stderr).toMatch(/0\.2\.3 serves 4 messages in thread '[^']+' where 0\.1\.2 served 2: duplicated/);
    expect(up.stdout + up.stderr).toMatch(/AUTO-REVERTED: 0\.1\.2 runs again on its own data/);
    expect((await readyz(w.url)).status).toBe(401); // 0.1.x is answering
    expect(await readBodies(w.api("0.1.2"), at012)).toEqual(at012.bodies);
    expect((await w.stack.outputs()).version).toBe("0.1.2");
  });

  test("reverting the line converges back to 0.1.2", async () => {
    w.stack.setVersionLine("0.1.2");
    expect((await w.stack.up()).code).toBe(0);
    expect(await w.stack.outputs()).toMatchObject({ version: "0.1.2", healthStatus: "healthy" });
    expect(await readBodies(w.api("0.1.2"), at012)).toEqual(at012.bodies);
  });

  test("up at 0.2.1 migrates: the 0.1.2 data is served by 0.2.1, the continuity gate passes, the old dir is kept", async () => {
    w.stack.setVersionLine("0.2.1");
    expect((await w.stack.up()).code).toBe(0);
    const out = await w.stack.outputs();
    expect(out).toMatchObject({ version: "0.2.1", previousVersion: "0.1.2", healthStatus: "healthy", dataContinuity: "passed" });
    expect(out.versionProof).toMatch(/^readyz reported "v0\.2\.1"/);
    expect(out.keptData).toMatchObject({ path: `${w.dbPath}.v0.1.2-kept-before-v0.2.1`, version: "0.1.2" });
    expect(existsSync(path.join(out.keptData.path, "CURRENT"))).toBe(true);
    expect(existsSync(path.join(w.dbPath, "store"))).toBe(true);
    expect(await waitForBodies(w.api("0.2.1"), at012, 2)).toEqual(at012.bodies);
    at021 = await writeThread(w.api("0.2.1"), 1);
  });

  test("a second up with no change does nothing: no backup, no restart", async () => {
    const pid = w.pid();
    const objects = await w.backupObjects();
    expect((await w.stack.up(["--expect-no-changes", "--diff"])).code, "a no-op must propose no change").toBe(0);
    expect(w.pid()).toBe(pid);
    expect(await w.backupObjects()).toEqual(objects);
  });

  test("a config-only change after the data moved on (a thread deleted since the upgrade): a restart, no gate against the old baseline", async () => {
    await deleteThread(w.api("0.2.1"), at012);
    expect(await waitForBodies(w.api("0.2.1"), at012, 1, 1000)).toEqual([]);
    await w.stack.set("progressdb:service.rateLimit.rps", "150", { path: true });
    expect((await w.stack.up()).code).toBe(0);
    const out = await w.stack.outputs();
    expect(out).toMatchObject({ version: "0.2.1", healthStatus: "healthy" });
    expect(out.dataContinuity).toMatch(/^skipped/);
    expect(readFileSync(path.join(w.installDir, "releases", "0.2.1", "config.yaml"), "utf8")).toContain("rps: 150");
    expect(await waitForBodies(w.api("0.2.1"), at021, 1)).toEqual(at021.bodies);
  });

  test("a 0.2.1 crash dump, written with the service's own launch environment, holds no secret", async () => {
    // A second instance from the service's launcher hits the Pebble LOCK and crash-dumps (§7).
    const pidFile = path.join(w.installDir, "run", "progressdb.pid");
    const pid = w.pid();
    const r = spawnSync(path.join(w.installDir, "bin", "progressdb-launch"), { timeout: 30_000, encoding: "utf8" });
    writeFileSync(pidFile, `${pid}\n`);
    expect(r.status).toBe(2);
    const crashDir = path.join(w.dbPath, "state", "crash");
    const dumps = readdirSync(crashDir);
    expect(dumps.length).toBeGreaterThan(0);
    const text = readFileSync(path.join(crashDir, dumps[0]), "utf8");
    expect(text).toMatch(/PATH=/); // the environment is in it, as on the real 0.2.1
    for (const s of w.secretValues()) expect(text).not.toContain(s);
  });

  test("an upgrade whose new version serves no data fails and reverts to 0.2.1 with its data", async () => {
    w.stack.setVersionLine("0.2.4");
    const up = await w.stack.up([], { allowFailure: true });
    expect(up.code).not.toBe(0);
    expect(up.stdout + up.stderr).toMatch(/0\.2\.4 serves \d+ threads? where 0\.2\.1 served \d+: data missing/);
    expect((await readyz(w.url)).version).toBe("v0.2.1");
    expect(await waitForBodies(w.api("0.2.1"), at021, 1)).toEqual(at021.bodies);
    w.stack.setVersionLine("0.2.1");
    expect((await w.stack.up()).code).toBe(0);
    expect((await w.stack.outputs()).version).toBe("0.2.1");
  });

  test("reverting the line to 0.1.2 runs 0.1.2 on its kept directory, with its data; writes made at 0.2.1 are not there", async () => {
    w.stack.setVersionLine("0.1.2");
    const preview = await w.stack.preview();
    expect(preview.stdout + preview.stderr).toMatch(/Writes made after .* are NOT in it/);
    expect((await w.stack.up()).code).toBe(0);
    expect(await w.stack.outputs()).toMatchObject({ version: "0.1.2", healthStatus: "healthy", keptData: { path: "", version: "", at: "" } });
    expect(await readBodies(w.api("0.1.2"), at012)).toEqual(at012.bodies);
    expect(await readBodies(w.api("0.1.2"), at021)).toEqual([]);
    // The 0.2.1 data is moved aside, not deleted.
    expect(readdirSync(path.dirname(w.dbPath)).some((n) => n.startsWith("data.v0.2.1-rolled-back-"))).toBe(true);
  });

  test("stack history records each update with its version", async () => {
    expect(await w.stack.updates()).toEqual([
      ["succeeded", "0.1.2"],
      ["failed", "0.2.3"],
      ["succeeded", "0.1.2"],
      ["succeeded", "0.2.1"],
      ["succeeded", "0.2.1"],
      ["succeeded", "0.2.1"],
      ["failed", "0.2.4"],
      ["succeeded", "0.2.1"],
      ["succeeded", "0.1.2"],
    ]);
  });

  test("no secret in the state, the CLI's output, a backup, a crash dump, a log or any host file but the 0600 configs", async () => {
    const secrets = w.secretValues();
    expect(await secretLeaks(w)).toEqual({ inState: [], inOutput: [], inFiles: [], configModes: [0o600] });
    // Every backup taken on the way, unpacked.
    const keys = (await w.backupObjects()).filter((k) => /\.tar\.(zst|gz)$/.test(k));
    expect(keys.length).toBeGreaterThanOrEqual(4);
    const unpacked = path.join(w.root, "backups");
    for (const key of keys) {
      const out = path.join(unpacked, path.basename(key).replace(/\.tar\.(zst|gz)$/, ""));
      mkdirSync(out, { recursive: true });
      expect((await w.minio.aws(["s3", "cp", "--only-show-errors", `s3://${w.minio.bucket}/${key}`, `${out}.tar`])).code).toBe(0);
      // GNU tar tells zstd from gzip by the bytes.
      execFileSync("tar", ["-xf", `${out}.tar`, "-C", out]);
    }
    expect(filesHoldingSecrets(unpacked, secrets)).toEqual([]);
    // The crash dump written above stayed out of every backup.
    expect(execFileSync("find", [unpacked, "-path", "*/state/crash/*"], { encoding: "utf8" })).toBe("");
  });
});

function statMode(p: string): number {
  return statSync(p).mode & 0o777;
}
