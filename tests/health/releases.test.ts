// The dialect clients, the host proof and the continuity gate against the REAL
// ProgressDB 0.1.2 and 0.2.1 binaries (see realReleases.ts for where they come
// from). Skipped, loudly, when the release archives are not there.
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { healthProvider } from "../../components/healthCheck";
import { apiCall } from "../../components/health/http";
import { pollUntilHealthy, runHealthCheck, takeSnapshot, type DataSample, type PollOptions } from "../../components/health";
import { ADMIN_KEY, BACKEND_KEY, client, copyDir, hasPrgcli, migrate, releasesDir, removeScratch, scratchDir, seed, startReal, stopAll, type Seed } from "./realReleases";

const rel = releasesDir();
if (!rel.dir) {
  console.warn(`\n*** SKIPPED tests/health/releases.test.ts (the real 0.1.2/0.2.1 binaries): ${rel.why} ***\n`);
} else if (!hasPrgcli()) {
  console.warn(`\n*** SKIPPED the migration test of tests/health/releases.test.ts: no prgcli_0.2.1_linux_amd64.tar.gz in ${rel.dir}/0.2.1 ***\n`);
}
const real = describe.skipIf(!rel.dir);

afterAll(async () => {
  await stopAll();
  removeScratch();
}, 60_000);

const HOST_PROOF = "pid 4242 listening on 127.0.0.1 runs /opt/progressdb/releases/0.1.2/progressdb (sha256 ab12…, equal to the verified archive's)";

/** The sample data: two authors, bodies as objects and strings, an empty thread, one deleted thread. */
const DATA: Seed[] = [
  { title: "welcome", author: "alice", messages: [{ text: "hello" }, { text: "how are you?" }] },
  { title: "second", author: "bob", messages: ["a plain string body", { text: "with", nested: { b: 1, a: [1, 2] } }, { text: "third" }] },
  { title: "quiet", author: "alice", messages: [] },
  { title: "gone", author: "bob", messages: [{ text: "deleted with its thread" }], deleted: true },
];

function checkOpts(url: string, extra: Partial<PollOptions>): PollOptions {
  return { url, expectedVersion: "0.2.1", timeoutMs: 10_000, intervalMs: 100, requestTimeoutMs: 3000, apiKey: BACKEND_KEY, adminApiKey: ADMIN_KEY, ...extra };
}

/** 0.2 applies writes asynchronously: wait until bob's deleted thread is gone from his list (the last write of DATA). */
async function settled(url: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = await apiCall(client(url), "GET", "/frontend/v1/threads", { key: BACKEND_KEY, query: { author: "bob" }, okStatuses: [200] });
    if (r.ok && (r.json as { threads: unknown[] }).threads.length === 1) return;
    if (Date.now() > deadline) throw new Error(`0.2.1 never applied the writes: ${JSON.stringify(r.ok ? r.json : r.obs)}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

real("0.1.2 (real binary): v1 dialect, host proof", () => {
  it("reads what was written through /v1: /admin/stats, every live thread (/admin/threads), its messages (/v1/messages?thread=)", async () => {
    const db = await startReal("0.1.2", path.join(scratchDir(), "v1-read"));
    await seed(db.url, "v1", DATA);
    const s = await takeSnapshot({ url: db.url, dialect: "v1", apiKey: BACKEND_KEY, requestTimeoutMs: 3000 });
    expect(s).toMatchObject({ available: true, reason: "", dialect: "v1", servedVersion: "", threadsListed: 3 });
    // 0.1.2 counts the deleted thread, and every message version (a delete is one more).
    expect(s.stats.threads).toBe(4);
    expect(s.threads.map((t) => t.messageCount)).toEqual([2, 3, 0]);
    // The admin key reads the same; so does the backend key alone.
    const byAdmin = await takeSnapshot({ url: db.url, dialect: "v1", adminApiKey: ADMIN_KEY, requestTimeoutMs: 3000 }, { salt: s.salt });
    expect(byAdmin.threads.map((t) => t.digest)).toEqual(s.threads.map((t) => t.digest));
    expect(JSON.stringify(s)).not.toMatch(/welcome|alice|hello|plain string/);

    // The same version, checked against its own snapshot: passes, host-proved, smoke test on /v1.
    const r = await pollUntilHealthy(checkOpts(db.url, { expectedVersion: "0.1.2", versionProof: "host", hostProof: HOST_PROOF, dialect: "v1", smokeTest: true, baseline: s }));
    expect(r).toMatchObject({ status: "healthy", reportedVersion: "0.1.2", versionProof: `host: ${HOST_PROOF}`, smokeResult: "passed", continuity: "passed" });
    await db.stop();
  });

  it("readyz proof against 0.1.2 fails: it has no /readyz (401 without a key), and reports no version", async () => {
    const db = await startReal("0.1.2", path.join(scratchDir(), "v1-readyz"));
    const o = await runHealthCheck(checkOpts(db.url, { expectedVersion: "0.1.2", timeoutMs: 300 }));
    expect(o.ok).toBe(false);
    expect(o.message).toContain(`GET ${db.url}/readyz answered 401`);
    expect(o.message).toContain('a 0.1.x version is proved with versionProof "host"');
    await db.stop();
  });
});

real("0.2.1 (real binary): frontend-v1 dialect, readyz proof", () => {
  it("reads what was written through /frontend/v1: owners (/admin/users), their threads and messages (backend key + ?author=)", async () => {
    const db = await startReal("0.2.1", path.join(scratchDir(), "v2-read"));
    await seed(db.url, "frontend-v1", DATA);
    await settled(db.url);
    const s = await takeSnapshot({ url: db.url, dialect: "frontend-v1", apiKey: BACKEND_KEY, adminApiKey: ADMIN_KEY, requestTimeoutMs: 3000 });
    expect(s).toMatchObject({ available: true, reason: "", dialect: "frontend-v1", servedVersion: "v0.2.1", threadsListed: 3 });
    expect(s.stats.threads).toBe(4);
    expect(s.threads.map((t) => t.messageCount).sort()).toEqual([0, 2, 3]);

    const r = await pollUntilHealthy(checkOpts(db.url, { dialect: "frontend-v1", smokeTest: true, baseline: s, baselineVersion: "0.2.1" }));
    expect(r).toMatchObject({ status: "healthy", reportedVersion: "v0.2.1", versionProof: 'readyz reported "v0.2.1"', smokeResult: "passed", continuity: "passed" });

    // The keys each route takes: a backend key alone cannot list owners (403 on /admin), so no sample.
    const noAdmin = await takeSnapshot({ url: db.url, dialect: "frontend-v1", apiKey: BACKEND_KEY, adminApiKey: BACKEND_KEY, requestTimeoutMs: 3000 });
    expect(noAdmin.available).toBe(false);
    expect(noAdmin.reason).toContain('reading /admin/stats: GET ' + db.url + '/admin/stats answered 403: {"error":"forbidden"}');
    await db.stop();
  });

  it("host proof against 0.2.1 fails, naming the version that answered", async () => {
    const db = await startReal("0.2.1", path.join(scratchDir(), "v2-host"));
    const o = await runHealthCheck(checkOpts(db.url, { expectedVersion: "0.1.2", versionProof: "host", hostProof: HOST_PROOF, dialect: "v1", timeoutMs: 300 }));
    expect(o.ok).toBe(false);
    expect(o.message).toContain(`Last seen: GET ${db.url}/readyz answered 200: {"status":"ok","version":"v0.2.1"}`);
    expect(o.message).toContain("a 0.2-family process (v0.2.1) is answering where 0.1.2 (0.1.x, which has no /readyz) was expected");
    await db.stop();
  });
});

real("0.1.2 → 0.2.1 (real binaries): the continuity gate", () => {
  let old: string;
  let baseline: DataSample;

  async function oldData(): Promise<void> {
    if (baseline) return;
    old = path.join(scratchDir(), "old-0.1.2");
    const db = await startReal("0.1.2", old);
    await seed(db.url, "v1", DATA);
    baseline = await takeSnapshot({ url: db.url, dialect: "v1", apiKey: BACKEND_KEY, adminApiKey: ADMIN_KEY, requestTimeoutMs: 3000 });
    expect(baseline.available).toBe(true);
    await db.stop(); // 0.1.2 has no SIGTERM handler: it dies at once; acknowledged writes are on disk.
  }

  async function check(url: string) {
    return healthProvider.create({
      url,
      expectedVersion: "0.2.1",
      deploymentId: "d1",
      versionProofMode: "readyz",
      dialect: "frontend-v1",
      timeoutSeconds: 10,
      intervalSeconds: 0.1,
      requestTimeoutSeconds: 3,
      smokeTest: true,
      apiKey: BACKEND_KEY,
      adminApiKey: ADMIN_KEY,
      baseline,
      baselineVersion: "0.1.2",
    });
  }

  it("0.2.1 started on the 0.1.2 data, not migrated: healthy, but serves nothing — continuity failed, data missing (no throw)", async () => {
    await oldData();
    const dir = path.join(scratchDir(), "in-place");
    copyDir(old, dir);
    const db = await startReal("0.2.1", dir);
    const created = await check(db.url);
    expect(created.outs).toMatchObject({ status: "healthy", reportedVersion: "v0.2.1", smokeResult: "passed", continuity: "failed" });
    // (the smoke test's own thread, deleted, is still counted by 0.2.1's /admin/stats)
    expect(created.outs["continuityMessage"]).toMatch(/^0\.2\.1 serves [01] threads? where 0\.1\.2 served 4: data missing; 0\.2\.1 serves none of the 3 sampled threads 0\.1\.2 served/);
    await db.stop();
  });

  it.skipIf(!hasPrgcli())("prgcli migrate (pebble) then 0.2.1: every message twice — continuity failed, duplicated by the migration", async () => {
    await oldData();
    const src = path.join(scratchDir(), "migrate-src");
    copyDir(old, src);
    const to = path.join(scratchDir(), "migrated");
    const out = await migrate(src, to);
    expect(out).toMatch(/Threads migrated: 4/);
    const db = await startReal("0.2.1", to);
    const created = await check(db.url);
    expect(created.outs).toMatchObject({ status: "healthy", smokeResult: "passed", continuity: "failed" });
    const msg = String(created.outs["continuityMessage"]);
    expect(msg).toContain("0.2.1 serves 4 messages in thread 'welcome' where 0.1.2 served 2: duplicated by the migration");
    expect(msg).toContain("0.2.1 serves 6 messages in thread 'second' where 0.1.2 served 3: duplicated by the migration");
    expect(msg).not.toContain("data missing");
    await db.stop();
  });

  it("after a faithful copy of the data (a 0.2.1 → 0.2.1 restart), the gate passes", async () => {
    const dir = path.join(scratchDir(), "v2-restart");
    const first = await startReal("0.2.1", dir);
    await seed(first.url, "frontend-v1", DATA);
    await settled(first.url);
    const b = await takeSnapshot({ url: first.url, dialect: "frontend-v1", apiKey: BACKEND_KEY, adminApiKey: ADMIN_KEY, requestTimeoutMs: 3000 });
    await first.stop();
    expect(fs.existsSync(dir)).toBe(true);
    const second = await startReal("0.2.1", dir);
    const r = await pollUntilHealthy(checkOpts(second.url, { dialect: "frontend-v1", baseline: b, baselineVersion: "0.2.1" }));
    expect(r.continuity).toBe("passed");
    await second.stop();
  });
});
