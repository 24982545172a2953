/**
 * Crossing the data format, 0.1.2 → 0.2.1, on the stand-ins (modelled on the
 * real releases; the real archives run in real.releases.test.ts), through
 * the rendered scripts over real SSH: 0.1.2 proved by binary identity (it has
 * no /readyz); the preflight refusing 0.1 data for a 0.2 target unless the
 * release's prgcli is staged and verified; migrate.sh (old data kept
 * untouched, kept-data recorded, results checked by content); 0.1.2 data
 * readable at 0.2.1; the rollback that swaps the kept data back; finalize's
 * revert when the continuity gate failed; and install's auto-revert after a
 * migration.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  answeringVersion,
  backup,
  currentLink,
  finalize,
  install,
  keptData,
  listThreads,
  migrate,
  newHost,
  pidOf,
  preflight,
  provision,
  readByTitle,
  readyz,
  releaseDir,
  secretsOf,
  sha256File,
  skipMessage,
  startWorld,
  stats,
  treeHash,
  whoListens,
  writeSampleData,
  type Sample,
  type TestHost,
  type World,
} from "./world";
import { tempDir } from "../fixtures/net";

const skip = skipMessage("migration integration tests");

/** A tool archive holding a fake prgcli (a shell script), with the .sha256 the preflight would have written. */
function fakeTool(dir: string, name: string, body: string): string {
  const d = path.join(dir, name);
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, "prgcli"), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  const archive = path.join(dir, `${name}.tar.gz`);
  const t = spawnSync("tar", ["-czf", archive, "-C", d, "prgcli"]);
  expect(t.status).toBe(0);
  fs.writeFileSync(`${archive}.sha256`, `${sha256File(archive)}  ${name}.tar.gz\n`);
  return archive;
}

function siblings(h: TestHost): string[] {
  return fs.readdirSync(path.dirname(h.params.dbPath)).sort();
}

describe.skipIf(!!skip)("0.1.2 → 0.2.1 across the data format (stand-ins)", () => {
  let w: World;
  let h: TestHost;
  let samples: Sample[];
  let dbTree: string;
  let scratch: string;
  const db = () => h.params.dbPath;

  beforeAll(async () => {
    w = await startWorld({
      versions: [
        "0.1.2",
        "0.2.1",
        { version: "0.2.2", prgcliFault: "duplicate-messages" },
        { version: "0.2.3", fault: "wrong-version" },
        // Every message ciphertext looks like JSON: what the real 0.2.1 prgcli drops (about 1 value in 128 on the real 0.1.2).
        { version: "0.1.1", fault: "json-looking-ciphertext" },
      ],
    });
    scratch = tempDir("migration");
    // 0.1.2 seals every value with its encryption_key: prgcli needs the old key (from the old release's config).
    h = await newHost(w, "mig", "process");
  }, 180_000);

  afterAll(async () => {
    await w?.stop();
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }, 120_000);

  it("installs 0.1.2, proved by the identity of the binary listening on the port (0.1.2 has no /readyz)", async () => {
    const i = await provision(w, h, "0.1.2");
    const bin = path.join(releaseDir(h, "0.1.2"), "progressdb");
    const sha = sha256File(w.mirror.release("0.1.2").binaryPath);
    expect(sha256File(bin)).toBe(sha);
    const who = whoListens(h)!;
    expect(who).toEqual({ pid: pidOf(h), exe: bin, sha256: sha });
    expect(i).toEqual({
      version: "0.1.2",
      previousVersion: "",
      proof: `pid ${who.pid} listening on port ${h.port} runs ${bin} (sha256 ${sha}, equal to releases/0.1.2/progressdb from the verified archive)`,
      switched: true,
    });
    expect((await readyz(h)).status).toBe(401);
    // 0.1.x reads its managed config (with the encryption key) from the file, 0600.
    const cfg = path.join(releaseDir(h, "0.1.2"), "config.yaml");
    expect(fs.statSync(cfg).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(cfg, "utf8")).toContain(`encryption_key: "${h.kmsKeyHex}"`);
    expect(fs.readFileSync(`/proc/${who.pid}/environ`, "utf8")).not.toMatch(/PROGRESSDB_|_KEY/);

    samples = [await writeSampleData(h, "0.1.2", 3, "first thread"), await writeSampleData(h, "0.1.2", 2, "second thread")];
    expect(await stats(h)).toEqual({ threads: 2, messages: 5 });
    // At rest, the values are ciphertext.
    const files = fs.readdirSync(db()).map((f) => fs.readFileSync(path.join(db(), f)));
    expect(files.some((b) => b.includes(Buffer.from("message 0 of first thread")))).toBe(false);
  });

  it("preflight refuses 0.2.1 on 0.1 data without a migration tool: nothing stopped, nothing changed", async () => {
    const pid = pidOf(h);
    const dbBefore = treeHash(db());
    const installBefore = treeHash(h.params.installDir, ["logs"]);
    const r = await preflight(w, h, "0.2.1");
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(`${db()} holds 0.1.x data (a Pebble DB at its root); 0.2.1 reads only the 0.2.x layout (store/) and would start on an EMPTY store`);
    expect(r.stderr).toContain("migrated offline with the release's prgcli first (nothing was changed)");
    expect(pidOf(h)).toBe(pid);
    expect(await answeringVersion(h)).toBe("0.1.2");
    expect(await readByTitle(h, "0.1.2", "first thread")).toEqual(samples[0].bodies);
    expect(treeHash(db())).toBe(dbBefore);
    expect(treeHash(h.params.installDir, ["logs"])).toBe(installBefore);
    expect(fs.existsSync(path.join(h.params.installDir, "staging", "0.2.1"))).toBe(false);
  });

  it("a prgcli whose checksum does not match is refused", async () => {
    const rel = w.mirror.release("0.2.1");
    const sums = (await (await fetch(rel.checksumsUrl)).text()).replace(rel.prgcliSha256!, "e".repeat(64));
    const file = path.join(scratch, "checksums-corrupt.txt");
    fs.writeFileSync(file, sums);
    const pid = pidOf(h);
    const r = await preflight(w, h, "0.2.1", { tool: true, checksumsUrl: `file://${file}` });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `sha256 mismatch for ${rel.prgcliArchiveName} downloaded from ${rel.prgcliArtifactUrl}: expected ${"e".repeat(64)} (from file://${file}), actual ${rel.prgcliSha256}`,
    );
    expect(fs.existsSync(path.join(h.params.installDir, "staging", "0.2.1", rel.prgcliArchiveName!))).toBe(false);
    expect(pidOf(h)).toBe(pid);
    expect(await answeringVersion(h)).toBe("0.1.2");
  });

  it("with the tool URL, preflight plans the migration and stages prgcli verified from the same checksums.txt", async () => {
    const pid = pidOf(h);
    const rel = w.mirror.release("0.2.1");
    const r = await preflight(w, h, "0.2.1", { tool: true });
    expect(r.code, r.stderr).toBe(0);
    const tool = path.join(h.params.installDir, "staging", "0.2.1", rel.prgcliArchiveName!);
    expect(r.json).toMatchObject({ layout: "root", plan: "migrate", tool, sha256: rel.sha256 });
    expect(sha256File(tool)).toBe(rel.prgcliSha256);
    expect(fs.readFileSync(`${tool}.sha256`, "utf8")).toBe(`${rel.prgcliSha256}  ${rel.prgcliArchiveName}\n`);
    expect(pidOf(h)).toBe(pid);
  });

  it("the backup stops 0.1.2 (it dies at once on SIGTERM)", async () => {
    const r = await backup(w, h, "0.2.1");
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ fromVersion: "0.1.2", toVersion: "0.2.1" });
    expect(pidOf(h)).toBeUndefined();
    dbTree = treeHash(db());
  });

  it("migrate.sh detects a cancelled prompt and a missing summary (prgcli exits 0 for both), changing nothing", async () => {
    const seen = path.join(scratch, "seen");
    const cancelled = fakeTool(
      scratch,
      "cancelled",
      `mkdir -p '${seen}'; printf '%s\\n' "$@" >'${seen}/argv'; cat >'${seen}/stdin'
prev=''; for a in "$@"; do [ "$prev" = --old-config ] && cp "$a" '${seen}/old-config.yaml' && echo "$a" >'${seen}/old-config-path'; prev=$a; done
printf 'Migration Summary:\\n  Source: x\\nDo you want to proceed with the migration? [y/N]: Migration cancelled.\\n'`,
    );
    const silent = fakeTool(scratch, "silent", "echo 'nothing to say'");
    for (const [archive, message] of [
      [cancelled, "prgcli cancelled the migration at its prompt (it exits 0 when it does) (nothing was changed)"],
      [silent, "prgcli printed no 'Threads migrated:'/'Messages migrated:' summary: the migration did not run (nothing was changed)"],
    ]) {
      const r = await migrate(w, h, "0.2.1", { toolArchive: archive });
      expect(r.code, r.stderr).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain(message);
      expect(r.stderr).toContain(`migration failed: ${db()} is unchanged (0.1.x data, 0.1.2)`);
      expect(treeHash(db())).toBe(dbTree);
      expect(siblings(h)).toEqual(["progressdb"]);
      expect(keptData(h)).toBeUndefined();
    }
    // How prgcli was run: the old key only in a temporary 0.1 config (gone afterwards), never on its argv; "y" on stdin.
    const argv = fs.readFileSync(path.join(seen, "argv"), "utf8").trim().split("\n");
    const oldConfig = fs.readFileSync(path.join(seen, "old-config-path"), "utf8").trim();
    expect(argv).toEqual(["migrate", "--old-config", oldConfig, "--to", `${db()}.migrating-v0.2.1`, "--format", "pebble", "--interactive=false"]);
    expect(fs.readFileSync(path.join(seen, "stdin"), "utf8")).toBe("y\n");
    const cfg = fs.readFileSync(path.join(seen, "old-config.yaml"), "utf8");
    expect(cfg).toContain(`db_path: "${db()}"`);
    expect(cfg).toContain(`encryption_key: "${h.kmsKeyHex}"`);
    expect(cfg).not.toContain("fields");
    expect(fs.existsSync(oldConfig)).toBe(false);
  });

  it("migrate.sh refuses a result with fewer threads than the old version served", async () => {
    const r = await migrate(w, h, "0.2.1", { expectThreads: 3 });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("prgcli migrated 2 threads, but 0.1.2 served 3 before the upgrade (nothing was changed)");
    expect(treeHash(db())).toBe(dbTree);
    expect(siblings(h)).toEqual(["progressdb"]);
    expect(keptData(h)).toBeUndefined();
  });

  it("migrate.sh migrates offline, keeps the 0.1.2 dir untouched beside the new one and records it", async () => {
    const r = await migrate(w, h, "0.2.1", { expectThreads: 2 });
    expect(r.code, r.stderr).toBe(0);
    const kept = `${db()}.v0.1.2-kept-before-v0.2.1`;
    expect(r.json).toMatchObject({ migrated: true, kept, from: "0.1.2", to: "0.2.1", threads: 2, messages: 5 });
    expect(r.stderr).toContain("Threads migrated: 2");
    expect(treeHash(kept)).toBe(dbTree);
    expect(fs.existsSync(path.join(db(), "store"))).toBe(true);
    expect(fs.existsSync(path.join(db(), "CURRENT"))).toBe(false);
    expect(siblings(h)).toEqual(["progressdb", "progressdb.v0.1.2-kept-before-v0.2.1"]);
    expect(keptData(h)).toEqual({ path: kept, from: "0.1.2", to: "0.2.1", at: (r.json as { at: string }).at });
    // Nothing secret was left beside the data, and the migration's log does not print the key.
    for (const s of secretsOf(w, h)) expect(r.stderr.includes(s), s).toBe(false);

    // The same upgrade again (another input of the step changed): the recorded result, nothing migrated twice.
    const migratedTree = treeHash(db());
    const again = await migrate(w, h, "0.2.1", { expectThreads: 2 });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toBe(r.stdout);
    expect(treeHash(db())).toBe(migratedTree);
    expect(treeHash(kept)).toBe(dbTree);
  });

  it("0.2.1 serves the data written at 0.1.2 (decrypted with the old key), and finalize commits", async () => {
    const i = await install(w, h, "0.2.1");
    expect(i.code, i.stderr).toBe(0);
    expect(i.json).toEqual({ version: "0.2.1", previousVersion: "0.1.2", proof: '/readyz reports "v0.2.1"', switched: true });
    for (const s of samples) expect(await readByTitle(h, "0.2.1", s.title), s.title).toEqual(s.bodies);
    expect(await stats(h)).toEqual({ threads: 2, messages: 5 });
    const f = await finalize(w, h, { version: "0.2.1", previousVersion: "0.1.2", continuity: "passed" });
    expect(f.code, f.stderr).toBe(0);
    expect(f.json).toEqual({ version: "0.2.1", committed: true });
    expect(keptData(h)?.from).toBe("0.1.2");
  });

  it("a write at 0.2.1, then rolling the version back to 0.1.2 swaps the kept data back (the 0.2.1 data moved aside)", async () => {
    await writeSampleData(h, "0.2.1", 1, "written at 0.2.1");
    const kept = keptData(h)!.path;
    expect(treeHash(kept)).toBe(dbTree); // untouched while 0.2.1 ran
    const p = await preflight(w, h, "0.1.2", { s3: null });
    expect(p.code, p.stderr).toBe(0);
    expect(p.json).toMatchObject({ layout: "store", plan: "swap-back", tool: "" });
    expect(p.stderr).toContain(`0.1.2 will run on its data kept at ${kept}`);
    const i = await install(w, h, "0.1.2");
    expect(i.code, i.stderr).toBe(0);
    expect(i.json!.previousVersion).toBe("0.2.1");
    expect(i.json!.proof).toMatch(new RegExp(`^pid \\d+ listening on port ${h.port} runs ${path.join(releaseDir(h, "0.1.2"), "progressdb")} `));
    expect(i.stderr).toContain(`put the 0.1.2 data kept at ${kept} back at ${db()}`);
    expect(await answeringVersion(h)).toBe("0.1.2");
    for (const s of samples) expect(await readByTitle(h, "0.1.2", s.title), s.title).toEqual(s.bodies);
    expect((await listThreads(h, "0.1.2")).map((t) => t.title).sort()).toEqual(["first thread", "second thread"]);
    expect(keptData(h)).toBeUndefined();
    const aside = siblings(h).filter((n) => n.startsWith("progressdb.v0.2.1-rolled-back-"));
    expect(aside).toHaveLength(1);
    expect(fs.existsSync(path.join(path.dirname(db()), aside[0], "store"))).toBe(true);
    expect(fs.existsSync(kept)).toBe(false);
  });

  it("upgrading to 0.2.1 again migrates again (the data is 0.1.x once more), and a failed continuity gate reverts release and data (exit 7)", async () => {
    const p = await preflight(w, h, "0.2.1", { tool: true, s3: null });
    expect(p.code, p.stderr).toBe(0);
    expect(p.json).toMatchObject({ layout: "root", plan: "migrate" });
    const m = await migrate(w, h, "0.2.1", { expectThreads: 2 });
    expect(m.code, m.stderr).toBe(0);
    expect(m.json).toMatchObject({ migrated: true, threads: 2 });
    const i = await install(w, h, "0.2.1");
    expect(i.code, i.stderr).toBe(0);
    expect(await readByTitle(h, "0.2.1", "second thread")).toEqual(samples[1].bodies);

    const finding = "thread 'first thread' (3 messages at 0.1.2) is not served by 0.2.1";
    const f = await finalize(w, h, { version: "0.2.1", previousVersion: "0.1.2", continuity: "failed", finding });
    expect(f.code, f.stderr).toBe(7);
    expect(f.stdout).toBe("");
    expect(f.stderr).toContain(`data-continuity gate: ${finding} — reverting to 0.1.2`);
    expect(f.stderr).toMatch(new RegExp(`AUTO-REVERTED: 0\\.1\\.2 runs again on its own data \\(pid \\d+ listening on port ${h.port} runs `));
    expect(currentLink(h)).toBe(releaseDir(h, "0.1.2"));
    expect(await answeringVersion(h)).toBe("0.1.2");
    expect(fs.existsSync(path.join(db(), "CURRENT"))).toBe(true);
    expect(fs.existsSync(path.join(db(), "store"))).toBe(false);
    for (const s of samples) expect(await readByTitle(h, "0.1.2", s.title), s.title).toEqual(s.bodies);
    expect(keptData(h)).toBeUndefined();
    expect(siblings(h).filter((n) => n.startsWith("progressdb.v0.2.1-failed-continuity-"))).toHaveLength(1);

    // Finalize again (the update re-run): already reverted, it says so and fails the same way.
    const again = await finalize(w, h, { version: "0.2.1", previousVersion: "0.1.2", continuity: "failed", finding });
    expect(again.code).toBe(7);
    expect(again.stderr).toContain(`Already reverted: 0.1.2 runs on ${db()}`);
  });

  it("preflight refuses 0.1 data with a 0.2 store/ beside it (a 0.2.x was started on it unmigrated), even with the tool", async () => {
    const store = path.join(db(), "store");
    fs.mkdirSync(store);
    try {
      const r = await preflight(w, h, "0.2.1", { tool: true, s3: null });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`${db()} holds both 0.1.x data at its root and a 0.2.x store/: a 0.2.x release was started on 0.1.x data without a migration`);
      expect(await answeringVersion(h)).toBe("0.1.2");
    } finally {
      fs.rmdirSync(store);
    }
  });

  // Hosts of their own, independent of the story above: run side by side.
  describe.concurrent("other hosts", () => {
    it("install's auto-revert after a migration puts the 0.1.2 data back (exit 5)", async () => {
      const g = await newHost(w, "revert", "process");
      await provision(w, g, "0.1.2");
      const sample = await writeSampleData(g, "0.1.2", 2, "before the broken upgrade");
      expect((await preflight(w, g, "0.2.3", { tool: true, s3: null })).code).toBe(0);
      const m = await migrate(w, g, "0.2.3", { expectThreads: 1 });
      expect(m.code, m.stderr).toBe(0);
      const kept = keptData(g)!.path;
      const r = await install(w, g, "0.2.3", { autoRevertSeconds: 5, backupUri: "s3://bucket/before.tar.gz" });
      expect(r.code).toBe(5);
      expect(r.stderr).toContain(`0.2.3 was not proved to answer on ${g.url} within 5s (last seen: GET /readyz: 200 {"status":"ok","version":"v0.2.3-wrong"})`);
      expect(r.stderr).toContain(`put the 0.1.2 data kept at ${kept} back at ${g.params.dbPath}`);
      expect(r.stderr).toContain("AUTO-REVERTED: current -> releases/0.1.2, and 0.1.2 is running and ready");
      expect(r.stderr).toContain("The pre-upgrade backup is s3://bucket/before.tar.gz.");
      expect(await answeringVersion(g)).toBe("0.1.2");
      expect(await readByTitle(g, "0.1.2", sample.title)).toEqual(sample.bodies);
      expect(keptData(g)).toBeUndefined();
      expect(fs.existsSync(kept)).toBe(false);
      expect(fs.existsSync(path.join(g.params.dbPath, "CURRENT"))).toBe(true);
      expect(fs.readdirSync(path.dirname(g.params.dbPath)).filter((n) => n.startsWith("progressdb.v0.2.3-failed-"))).toHaveLength(1);
    });

    it("migrate.sh refuses a result with fewer message versions than the old version held: prgcli skipped the ciphertexts that look like JSON", async () => {
      const g = await newHost(w, "trap", "process");
      await provision(w, g, "0.1.1");
      const sample = await writeSampleData(g, "0.1.1", 2, "json-looking ciphertexts");
      expect(await stats(g)).toEqual({ threads: 1, messages: 2 });
      const before = treeHash(g.params.dbPath);
      expect((await preflight(w, g, "0.2.1", { tool: true, s3: null })).code).toBe(0);
      const m = await migrate(w, g, "0.2.1", { expectThreads: 1, expectMessages: 2 });
      expect(m.code).toBe(1);
      expect(m.stderr).toContain("prgcli migrated 0 message versions, but 0.1.1 held 2 before the upgrade: it skipped 2 it could not read");
      expect(m.stderr).toContain("the migration would lose data (nothing was changed)");
      // Nothing changed, and 0.1.1 serves its data again.
      expect(treeHash(g.params.dbPath)).toBe(before);
      expect(fs.readdirSync(path.dirname(g.params.dbPath))).toEqual(["progressdb"]);
      expect(keptData(g)).toBeUndefined();
      expect(await answeringVersion(g)).toBe("0.1.1");
      expect(await readByTitle(g, "0.1.1", sample.title)).toEqual(sample.bodies);
    });

    it("the duplicate-messages prgcli: 2 messages at 0.1.2 come out as 4 at 0.2.x (the continuity gate's job to catch)", async () => {
      const d = await newHost(w, "dup", "process");
      // No KMS: 0.1.2 stores plain values, and migrate.sh gives prgcli a throwaway key (it demands one).
      d.kmsKeyHex = "";
      await provision(w, d, "0.1.2");
      expect(fs.readFileSync(path.join(releaseDir(d, "0.1.2"), "config.yaml"), "utf8")).not.toContain("encryption_key");
      const sample = await writeSampleData(d, "0.1.2", 2, "duplicated");
      expect(await stats(d)).toEqual({ threads: 1, messages: 2 });
      expect((await preflight(w, d, "0.2.2", { tool: true, s3: null })).code).toBe(0);
      const m = await migrate(w, d, "0.2.2", { expectThreads: 1 });
      expect(m.code, m.stderr).toBe(0);
      expect(m.json).toMatchObject({ migrated: true, threads: 1, messages: 4 });
      const i = await install(w, d, "0.2.2");
      expect(i.code, i.stderr).toBe(0);
      expect(await stats(d)).toEqual({ threads: 1, messages: 4 });
      const bodies = await readByTitle(d, "0.2.2", "duplicated");
      expect(bodies).toHaveLength(4);
      const count = (b: unknown) => bodies!.filter((x) => JSON.stringify(x) === JSON.stringify(b)).length;
      for (const b of sample.bodies) expect(count(b)).toBe(2);
    });
  });
});
