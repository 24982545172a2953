// Data continuity: the comparison (pure), the snapshot's reading and the gate
// against loopback fakes of both APIs. The same clients against the real
// 0.1.2 and 0.2.1 binaries: releases.test.ts.
import { describe, expect, it } from "vitest";
import {
  canonicalJson,
  compareSample,
  digestThread,
  runHealthCheck,
  spread,
  takeSnapshot,
  type DataSample,
  type ObservedThread,
  type ThreadContent,
} from "../../components/health";
import { snapshotProvider } from "../../components/dataSnapshot";
import { diffSnapshotInputs } from "../../components/health/snapshot";
import { fakeApi, fakeV1Api, freePort, servePerTest } from "./servers";

const SALT = "00112233445566778899aabbccddeeff";
const BACKEND = "sk_backend_continuity_1";
const ADMIN = "ak_admin_continuity_1";

const start = servePerTest();

function thread(title: string, author: string, bodies: unknown[]): ThreadContent {
  return { title, author, messages: bodies.map((body) => ({ author, body })) };
}

function sample(threads: ThreadContent[], stats?: { threads: number; messages: number }): DataSample {
  return {
    available: true,
    reason: "",
    dialect: "v1",
    servedVersion: "",
    takenAt: "2026-01-01T00:00:00.000Z",
    salt: SALT,
    stats: stats ?? { threads: threads.length, messages: threads.reduce((n, t) => n + t.messages.length, 0) },
    threadsListed: threads.length,
    threads: threads.map((t, i) => digestThread(SALT, t, `#${i + 1}`)),
  };
}

/** What a new version serves: thread ids differ from the baseline's (they change across a migration). */
function observed(threads: ThreadContent[], stats?: { threads: number; messages: number }) {
  const list: ObservedThread[] = threads.map((t, i) => ({ ...digestThread(SALT, t, `t:0000${i}`), title: t.title }));
  return { stats: stats ?? { threads: threads.length, messages: 0 }, threads: list };
}

const welcome = thread("welcome", "alice", [{ text: "hello" }, "plain string"]);
const second = thread("second", "bob", [{ text: "hi bob" }]);
const third = thread("third", "carol", []);

describe("compareSample (pure)", () => {
  it("the same content under new ids passes (ids/keys change across a migration)", () => {
    expect(compareSample(sample([welcome, second, third]), observed([third, second, welcome]), "0.1.2", "0.2.1")).toEqual({ continuity: "passed", message: "" });
  });

  it("an empty new store: names the numbers and says data missing", () => {
    const r = compareSample(sample([welcome, second, third]), observed([], { threads: 0, messages: 0 }), "0.1.2", "0.2.1");
    expect(r.continuity).toBe("failed");
    expect(r.message).toContain("0.2.1 serves 0 threads where 0.1.2 served 3: data missing");
    expect(r.message).toContain("0.2.1 serves none of the 3 sampled threads 0.1.2 served (looked up by author and title): data missing");
  });

  it("one missing thread is named by its sample ref, not its title", () => {
    const r = compareSample(sample([welcome, second, third]), observed([welcome, third], { threads: 3, messages: 3 }), "0.1.2", "0.2.1");
    expect(r).toEqual({ continuity: "failed", message: "0.2.1 does not serve 1 of the 3 sampled threads 0.1.2 served (#2; looked up by author and title): data missing" });
  });

  it("duplicated messages (the offline migration doubles them): 4 where 2", () => {
    const doubled = thread("welcome", "alice", [{ text: "hello" }, { text: "hello" }, "plain string", "plain string"]);
    const r = compareSample(sample([welcome]), observed([doubled]), "0.1.2", "0.2.1");
    expect(r).toEqual({ continuity: "failed", message: "0.2.1 serves 4 messages in thread 'welcome' where 0.1.2 served 2: duplicated by the migration" });
  });

  it("fewer messages", () => {
    const r = compareSample(sample([welcome]), observed([thread("welcome", "alice", ["plain string"])]), "0.1.2", "0.2.1");
    expect(r).toEqual({ continuity: "failed", message: "0.2.1 serves 1 message in thread 'welcome' where 0.1.2 served 2: 1 missing" });
  });

  it("more messages (written since the snapshot) pass; a changed one does not", () => {
    const more = thread("welcome", "alice", [{ text: "hello" }, "plain string", "written after the upgrade"]);
    expect(compareSample(sample([welcome]), observed([more]), "0.1.2", "0.2.1").continuity).toBe("passed");
    const changed = thread("welcome", "alice", [{ text: "HELLO" }, "plain string"]);
    expect(compareSample(sample([welcome]), observed([changed]), "0.1.2", "0.2.1").message).toBe(
      "0.2.1 serves 2 messages in thread 'welcome' where 0.1.2 served 2: 1 of them changed or missing",
    );
  });

  it("more threads (written since) pass; fewer threads in /admin/stats fail even when the sample is intact", () => {
    expect(compareSample(sample([welcome]), observed([welcome, second], { threads: 2, messages: 3 }), "0.1.2", "0.2.1").continuity).toBe("passed");
    const r = compareSample(sample([welcome], { threads: 5, messages: 9 }), observed([welcome], { threads: 4, messages: 9 }), "0.1.2", "0.2.1");
    expect(r.message).toBe("0.2.1 serves 4 threads where 0.1.2 served 5: data missing");
  });

  it("two threads with the same author and title: each baseline thread takes its closest match once", () => {
    const a = thread("daily", "alice", ["monday"]);
    const b = thread("daily", "alice", ["tuesday", "wednesday"]);
    expect(compareSample(sample([a, b]), observed([b, a]), "0.1.2", "0.2.1").continuity).toBe("passed");
    const r = compareSample(sample([a, b]), observed([b]), "0.1.2", "0.2.1");
    expect(r.message).toContain("does not serve 1 of the 2 sampled threads");
  });

  it("an empty baseline store: skipped, nothing to compare", () => {
    expect(compareSample(sample([], { threads: 0, messages: 0 }), observed([]), "0.1.2", "0.2.1")).toEqual({
      continuity: "skipped: the baseline has no data (0 threads)",
      message: "",
    });
  });

  it("threads too long to keep each digest compare by count", () => {
    const long = (n: number): ThreadContent => ({ ...thread("long", "alice", Array.from({ length: n }, (_, i) => `m${i}`)), truncatedAt: n });
    const base = sample([long(300)]);
    expect(base.threads[0]).toMatchObject({ messageCount: 300, messageDigests: [], messagesTruncated: true });
    expect(compareSample(base, observed([long(300)]), "a", "b").continuity).toBe("passed");
    expect(compareSample(base, observed([long(299)]), "a", "b").message).toBe("b serves 299 messages in thread 'long' where a served 300: 1 missing");
    expect(compareSample(base, observed([long(600)]), "a", "b").message).toContain("duplicated by the migration?");
  });

  it("lists at most five thread problems, then a count; titles are one line, cut at 60", () => {
    const base = Array.from({ length: 8 }, (_, i) => thread(`t${i}\n${"x".repeat(80)}`, "alice", ["a", "b"]));
    const now = base.map((t) => ({ ...t, messages: t.messages.slice(0, 1) }));
    const r = compareSample(sample(base), observed(now), "a", "b");
    expect(r.message.split("; ")).toHaveLength(6);
    expect(r.message).toContain("and 3 more threads differ");
    expect(r.message).toContain(`'t0 ${"x".repeat(57)}…'`);
  });
});

describe("digests", () => {
  it("the sample holds no user data in clear, and is salted", () => {
    const s = sample([welcome, second]);
    const text = JSON.stringify(s);
    for (const clear of ["welcome", "alice", "hello", "plain string", "second", "bob"]) expect(text).not.toContain(clear);
    expect(digestThread("another-salt", welcome, "#1").digest).not.toBe(s.threads[0]!.digest);
  });

  it("a body's digest does not depend on key order", () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { f: 2, e: 3 }], c: null } })).toBe('{"a":{"c":null,"d":[1,{"e":3,"f":2}]},"b":1}');
    const x = digestThread(SALT, thread("t", "u", [{ a: 1, b: 2 }]), "#1");
    const y = digestThread(SALT, thread("t", "u", [{ b: 2, a: 1 }]), "#1");
    expect(x.digest).toBe(y.digest);
  });

  it("spread picks evenly, first and last included", () => {
    expect(spread(3, 20)).toEqual([0, 1, 2]);
    expect(spread(100, 5)).toEqual([0, 25, 50, 74, 99]);
    expect(spread(10, 1)).toEqual([0]);
    expect(spread(0, 5)).toEqual([]);
  });
});

describe("takeSnapshot: never fails", () => {
  const opts = { requestTimeoutMs: 500, timeoutMs: 3000 };

  it("a down service: available false with the reason, at once", async () => {
    const port = await freePort();
    const t0 = Date.now();
    const s = await takeSnapshot({ url: `http://127.0.0.1:${port}`, dialect: "v1", apiKey: BACKEND, ...opts });
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(s).toMatchObject({ available: false, threads: [], stats: { threads: 0, messages: 0 } });
    expect(s.reason).toContain(`the service did not answer: GET http://127.0.0.1:${port}/healthz failed`);
    expect(s.reason).toContain("connection refused");
  });

  it("no keys, or a 0.2.x without an admin key: says which key", async () => {
    const s = await start(fakeApi("v0.2.1", BACKEND).handler);
    expect((await takeSnapshot({ url: s.url, dialect: "v1", ...opts })).reason).toBe("no API key (0.1.x reads threads with a backend or admin key)");
    expect((await takeSnapshot({ url: s.url, dialect: "frontend-v1", apiKey: BACKEND, ...opts })).reason).toBe(
      "no adminApiKey (0.2.x lists thread owners and stats with an admin key only)",
    );
    expect(s.requests).toHaveLength(0);
  });

  it("a refused key: available false, the key is not in the reason", async () => {
    const s = await start(fakeApi("v0.2.1", BACKEND, undefined, false, ADMIN).handler);
    const r = await takeSnapshot({ url: s.url, dialect: "frontend-v1", apiKey: BACKEND, adminApiKey: "ak_wrong_admin_key", ...opts });
    expect(r.available).toBe(false);
    expect(r.reason).toContain('reading /admin/stats: GET ' + s.url + '/admin/stats answered 401: {"error":"unauthorized"}');
    expect(r.reason).not.toContain("ak_wrong_admin_key");
  });

  it("the wrong dialect for what runs is named", async () => {
    const v2 = await start(fakeApi("v0.2.1", BACKEND).handler);
    expect((await takeSnapshot({ url: v2.url, dialect: "v1", apiKey: BACKEND, ...opts })).reason).toContain('dialect is "v1" (0.1.x) but /readyz answered 200 with v0.2.1');
    const v1 = await start(fakeV1Api(BACKEND).handler);
    expect((await takeSnapshot({ url: v1.url, dialect: "frontend-v1", apiKey: BACKEND, adminApiKey: ADMIN, ...opts })).reason).toContain(
      'dialect is "frontend-v1" (0.2.x) but there is no /readyz (401)',
    );
  });

  it("enabled: false reads nothing", async () => {
    const s = await start(fakeV1Api(BACKEND).handler);
    expect(await takeSnapshot({ url: s.url, dialect: "v1", apiKey: BACKEND, enabled: false, ...opts })).toMatchObject({
      available: false,
      reason: "the snapshot is disabled (enabled: false)",
    });
    expect(s.requests).toHaveLength(0);
  });

  it("0.1.x at its default rate limit: waits out the 429s, one request at a time", async () => {
    const api = fakeV1Api(BACKEND, { rateLimit: { burst: 4 } });
    for (let i = 0; i < 6; i++) {
      api.threads.set(`thread-${i}`, { title: `t${i}`, author: `u${i % 2}`, deleted: i === 5 });
      api.messages.set(`msg-${i}`, { thread: `thread-${i}`, author: `u${i % 2}`, body: { text: `m${i}` }, deleted: false });
    }
    const s = await start(api.handler);
    const r = await takeSnapshot({ url: s.url, dialect: "v1", apiKey: BACKEND, ...opts, timeoutMs: 10_000 });
    expect(r).toMatchObject({ available: true, reason: "", stats: { threads: 6, messages: 6 }, threadsListed: 5 });
    expect(r.threads.map((t) => t.messageCount)).toEqual([1, 1, 1, 1, 1]);
    expect(s.requests.length).toBeGreaterThan(9); // healthz, readyz, stats, list, 5 threads, + the 429s
  });
});

describe("the continuity gate in runHealthCheck", () => {
  const fast = { expectedVersion: "0.2.1", timeoutMs: 2000, intervalMs: 20, requestTimeoutMs: 500 };

  async function v2WithData() {
    const api = fakeApi("v0.2.1", BACKEND, undefined, false, ADMIN);
    api.threads.set("t:1", { title: "welcome", author: "alice", deleted: false });
    api.messages.set("t:1:m:2:000000000", { thread: "t:1", author: "alice", body: { text: "hello" }, deleted: false });
    const s = await start(api.handler);
    return { api, s };
  }

  it("skipped, with the reason, when it cannot or must not run", async () => {
    const { s } = await v2WithData();
    const base = { url: s.url, ...fast, dialect: "frontend-v1" as const, apiKey: BACKEND };
    const b = sample([thread("welcome", "alice", [{ text: "hello" }])]);
    expect((await runHealthCheck({ ...base, baseline: b })).continuity).toBe("skipped: no adminApiKey (dataContinuity is on by default only with one)");
    expect((await runHealthCheck({ ...base, adminApiKey: ADMIN, baseline: b, dataContinuity: false })).continuity).toBe("skipped: dataContinuity is off");
    expect((await runHealthCheck({ ...base, adminApiKey: ADMIN })).continuity).toBe("skipped: no baseline sample");
    expect((await runHealthCheck({ ...base, adminApiKey: ADMIN, baseline: { ...b, available: false, reason: "the service did not answer" } })).continuity).toBe(
      "skipped: no baseline (the service did not answer)",
    );
    const refused = await runHealthCheck({ ...base, adminApiKey: "ak_not_configured_1", baseline: b });
    expect(refused.ok).toBe(true);
    expect(refused.continuity).toMatch(/^skipped: 0\.2\.1 refused a key while reading the sample — reading \/admin\/stats: .* answered 401/);
    expect(refused.continuity).not.toContain("ak_not_configured_1");
  });

  it("passes on the same data; fails without throwing when a thread lost messages", async () => {
    const { api, s } = await v2WithData();
    const b = sample([thread("welcome", "alice", [{ text: "hello" }])], { threads: 1, messages: 1 });
    const opts = { url: s.url, ...fast, dialect: "frontend-v1" as const, apiKey: BACKEND, adminApiKey: ADMIN, baseline: b, baselineVersion: "0.2.0" };
    expect(await runHealthCheck(opts)).toMatchObject({ ok: true, continuity: "passed", continuityMessage: "" });
    api.messages.get("t:1:m:2:000000000")!.deleted = true;
    expect(await runHealthCheck(opts)).toMatchObject({
      ok: true,
      continuity: "failed",
      continuityMessage: "0.2.1 serves 0 messages in thread 'welcome' where 0.2.0 served 1: 1 missing",
    });
    // Reads went one at a time, with the backend key on /frontend and the admin key on /admin.
    for (const q of s.requests.filter((x) => x.path.startsWith("/frontend/"))) expect(q.headers["x-api-key"]).toBe(BACKEND);
    for (const q of s.requests.filter((x) => x.path.startsWith("/admin/"))) expect(q.headers["x-api-key"]).toBe(ADMIN);
  });

  it("a new version that cannot serve the reads fails the gate (not the check)", async () => {
    const b = sample([thread("welcome", "alice", [{ text: "hello" }])]);
    const broken = await start(fakeApi("v0.2.1", BACKEND, { method: "GET", pathPattern: /^\/admin\/users/, status: 500 }, false, ADMIN).handler);
    const r = await runHealthCheck({ url: broken.url, ...fast, dialect: "frontend-v1", apiKey: BACKEND, adminApiKey: ADMIN, baseline: b, baselineVersion: "0.1.2" });
    expect(r.ok).toBe(true);
    expect(r.continuity).toBe("failed");
    expect(r.continuityMessage).toMatch(/^0\.2\.1 could not serve the sample 0\.1\.2 served: listing thread owners \(GET \/admin\/users\): GET .* answered 500/);
    expect(r.continuityMessage).not.toContain(BACKEND);
  });
});

describe("DataSnapshot provider", () => {
  it("create on a down service succeeds with available false; refresh and setting changes keep the sample", async () => {
    const port = await freePort();
    const inputs = { url: `http://127.0.0.1:${port}`, dialect: "v1", version: "0.2.1", apiKey: BACKEND, requestTimeoutSeconds: 0.5, sampleSize: 20, enabled: true, providerVersion: "1" };
    const created = await snapshotProvider.create(inputs);
    expect(created.outs).toMatchObject({ available: false, url: inputs.url, version: "0.2.1" });
    expect(String(created.outs["reason"])).toContain("the service did not answer");
    expect(JSON.stringify(created.outs)).not.toContain(BACKEND);

    const read = await snapshotProvider.read!(created.id, created.outs);
    expect(read.props).toEqual(created.outs);
    expect(diffSnapshotInputs(read.props!, read.inputs!)).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });

    expect(diffSnapshotInputs(created.outs, { ...inputs, version: "0.2.2" })).toMatchObject({ changes: true, replaces: ["version"] });
    const other = { ...inputs, sampleSize: 5, dialect: "frontend-v1" };
    expect(diffSnapshotInputs(created.outs, other)).toMatchObject({ changes: true, replaces: [] });
    const updated = await snapshotProvider.update!(created.id, created.outs, other);
    expect(updated.outs).toMatchObject({ sample: created.outs["sample"], sampleSize: 5, dialect: "frontend-v1" });
  });

  it("check names bad fields", async () => {
    const r = await snapshotProvider.check!({}, { url: "nope", dialect: "v3", version: "", sampleSize: 0 });
    expect(r.failures?.map((f) => f.property)).toEqual(["url", "dialect", "version", "sampleSize"]);
  });
});
