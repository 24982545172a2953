/**
 * The host scripts against the REAL ProgressDB 0.1.2 and 0.2.1 archives (and
 * the real prgcli), served by the release mirror from the release dir
 * (PDB_RELEASES_DIR or ../shared/progressdb-releases), over real SSH: 0.1.2
 * installed and proved by binary identity, the 0.1.2 → 0.2.1 migration
 * through migrate.sh (the real prgcli duplicates every message), and the
 * rollback onto the kept data. Skipped, loudly, when the archives are not
 * there.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  answeringVersion,
  api,
  AUTHOR,
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
  realReleasesUnavailable,
  releaseDir,
  secretsOf,
  serviceConfig,
  serviceLog,
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
import { realReleasesDir } from "../fixtures/releases";

const skip = skipMessage("integration tests against the real 0.1.2/0.2.1 archives", realReleasesUnavailable() || undefined);

describe.skipIf(!!skip)("the real 0.1.2 and 0.2.1 releases through the host scripts", () => {
  let w: World;
  let h: TestHost;
  let sample: Sample;

  beforeAll(async () => {
    w = await startWorld({ fromDir: realReleasesDir(), versions: ["0.1.2", "0.2.1"] });
    h = await newHost(w, "real", "process");
    // No KMS: the real 0.2.1 prgcli drops the ~1 in 128 encrypted 0.1.2 messages whose ciphertext
    // looks like JSON (pinned in tests/contract), which would make the counts below chance.
    h.kmsKeyHex = "";
  }, 180_000);

  afterAll(async () => {
    await w?.stop();
  }, 120_000);

  it("installs the real 0.1.2, proved by the identity of the binary on the port (it has no /readyz and reports \"dev\")", async () => {
    const i = await provision(w, h, "0.1.2");
    const bin = path.join(releaseDir(h, "0.1.2"), "progressdb");
    const sha = sha256File(w.mirror.release("0.1.2").binaryPath);
    expect(sha256File(bin)).toBe(sha);
    const who = whoListens(h)!;
    expect(who).toEqual({ pid: pidOf(h), exe: bin, sha256: sha });
    expect(i.proof).toBe(`pid ${who.pid} listening on port ${h.port} runs ${bin} (sha256 ${sha}, equal to releases/0.1.2/progressdb from the verified archive)`);
    expect((await readyz(h)).status).toBe(401);
    expect(serviceLog(h)).toMatch(/Version:\s+dev/);
    expect(fs.readFileSync(`/proc/${who.pid}/environ`, "utf8").split("\0").filter(Boolean)).toEqual([
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]);
    sample = await writeSampleData(h, "0.1.2", 2, "real 0.1.2 thread");
    expect(await stats(h)).toEqual({ threads: 1, messages: 2 });
  });

  it("preflight refuses 0.2.1 on the 0.1.2 data without prgcli, and with it plans the migration", async () => {
    const pid = pidOf(h);
    const refused = await preflight(w, h, "0.2.1", { s3: null });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("holds 0.1.x data (a Pebble DB at its root)");
    expect(pidOf(h)).toBe(pid);
    const p = await preflight(w, h, "0.2.1", { s3: null, tool: true });
    expect(p.code, p.stderr).toBe(0);
    const rel = w.mirror.release("0.2.1");
    expect(p.json).toMatchObject({ layout: "root", plan: "migrate", tool: path.join(h.params.installDir, "staging", "0.2.1", rel.prgcliArchiveName!) });
    expect(sha256File(p.json!.tool)).toBe(rel.prgcliSha256);
    expect(await answeringVersion(h)).toBe("0.1.2");
  });

  it("migrate.sh runs the real prgcli offline: the 0.1.2 dir kept untouched, 2 messages migrated as 4", async () => {
    const before = treeHash(h.params.dbPath, ["LOCK"]);
    const m = await migrate(w, h, "0.2.1", { expectThreads: 1, expectMessages: 2 });
    expect(m.code, m.stderr).toBe(0);
    const kept = `${h.params.dbPath}.v0.1.2-kept-before-v0.2.1`;
    // The real prgcli copies each message twice (thread:…:msg: and version:msg:).
    expect(m.json).toMatchObject({ migrated: true, kept, from: "0.1.2", to: "0.2.1", threads: 1, messages: 4 });
    expect(m.stderr).toContain("Migration completed successfully!");
    expect(pidOf(h)).toBeUndefined();
    expect(treeHash(kept, ["LOCK"])).toBe(before);
    expect(keptData(h)).toMatchObject({ path: kept, from: "0.1.2", to: "0.2.1" });
    for (const s of secretsOf(w, h)) expect(m.stderr.includes(s), s).toBe(false);
  });

  it("the real 0.2.1 serves the 0.1.2 thread with every message twice (what the continuity gate must catch)", async () => {
    const i = await install(w, h, "0.2.1");
    expect(i.code, i.stderr).toBe(0);
    expect(i.json).toEqual({ version: "0.2.1", previousVersion: "0.1.2", proof: '/readyz reports "v0.2.1"', switched: true });
    expect((await readyz(h)).body).toEqual({ status: "ok", version: "v0.2.1" });
    expect(await stats(h)).toEqual({ threads: 1, messages: 4 });
    const bodies = (await readByTitle(h, "0.2.1", sample.title))!;
    expect(bodies).toHaveLength(4);
    for (const b of sample.bodies) expect(bodies.filter((x) => JSON.stringify(x) === JSON.stringify(b))).toHaveLength(2);
    const environ = fs.readFileSync(`/proc/${pidOf(h)}/environ`, "utf8");
    for (const s of secretsOf(w, h)) expect(environ.includes(s), s).toBe(false);
  });

  it("rolling back to the real 0.1.2 swaps the kept data back: 2 messages again", async () => {
    const p = await preflight(w, h, "0.1.2", { s3: null });
    expect(p.code, p.stderr).toBe(0);
    expect(p.json).toMatchObject({ layout: "store", plan: "swap-back" });
    const i = await install(w, h, "0.1.2");
    expect(i.code, i.stderr).toBe(0);
    expect(i.json!.proof).toMatch(/^pid \d+ listening on port \d+ runs .*\/releases\/0\.1\.2\/progressdb \(sha256 /);
    expect(await answeringVersion(h)).toBe("0.1.2");
    expect(await readByTitle(h, "0.1.2", sample.title)).toEqual(sample.bodies);
    expect(await stats(h)).toEqual({ threads: 1, messages: 2 });
    expect(keptData(h)).toBeUndefined();
  });

  // Hosts of their own, independent of the story above: run side by side.
  describe.concurrent("other hosts", () => {
    it("field-encrypted 0.1.2 bodies come out of the real prgcli still sealed: 0.2.1 with the KMS on cannot read them (500)", async () => {
      const e = await newHost(w, "real-enc", "process", { encryptFields: ["body"] });
      await provision(w, e, "0.1.2");
      const s = await writeSampleData(e, "0.1.2", 1, "real sealed");
      expect(await readByTitle(e, "0.1.2", s.title)).toEqual(s.bodies);
      expect((await preflight(w, e, "0.2.1", { s3: null, tool: true })).code).toBe(0);
      const m = await migrate(w, e, "0.2.1", { expectThreads: 1 });
      expect(m.code, m.stderr).toBe(0);
      const i = await install(w, e, "0.2.1");
      expect(i.code, i.stderr).toBe(0);
      // The thread is there, but its messages carry the 0.1 ciphertext and no 0.2 DEK.
      const t = (await listThreads(e, "0.2.1")).find((x) => x.title === s.title)!;
      expect(t).toBeDefined();
      const r = await api(e, "GET", `/frontend/v1/threads/${encodeURIComponent(t.key)}/messages`, { user: AUTHOR });
      expect(r.status).toBe(500);
      expect(r.text).toContain("no KMS key ID for thread");
    });

    it("a real 0.2.1 that crashes on its config (no signing key) dumps its environment: there is no secret in it", async () => {
      const c = await newHost(w, "real-crash", "process");
      expect((await preflight(w, c, "0.2.1", { s3: null })).code).toBe(0);
      const r = await install(w, c, "0.2.1", { config: serviceConfig(c, "0.2.1", { signing: [] }), autoRevertSeconds: 30 });
      expect(r.code).toBe(6);
      expect(r.stderr).toContain("signing keys are required");
      expect(r.stderr).toContain("there is no previous release to revert to");
      const crashDir = path.join(c.params.dbPath, "state", "crash");
      const dumps = fs.readdirSync(crashDir);
      expect(dumps).toHaveLength(1);
      expect(fs.statSync(path.join(crashDir, dumps[0])).mode & 0o777).toBe(0o600);
      const dump = fs.readFileSync(path.join(crashDir, dumps[0]), "utf8");
      // It does print the environment: the launcher gave the service nothing but PATH...
      const environ = dump.split("--- environ ---\n")[1].split("\n\n")[0].trim().split("\n");
      expect(environ).toEqual(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]);
      // ...and no secret is anywhere in the dump: the keys are in the 0600 config file only.
      for (const x of secretsOf(w, c)) expect(dump.includes(x), x).toBe(false);
    }, 90_000);
  });
});
