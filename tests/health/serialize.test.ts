// The HealthCheck provider must survive Pulumi's closure serialization and run
// where the dynamic-provider host runs it: a fresh Node process that evaluates
// the text with require-from-string and calls `.handler()` (see
// @pulumi/pulumi/cmd/dynamic-provider/index.js, getProvider). Also checks what
// the resource registers (mocks), since that serializes the provider too.
import * as pulumi from "@pulumi/pulumi";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DataSnapshot, SNAPSHOT_PROVIDER_VERSION, snapshotProvider } from "../../components/dataSnapshot";
import { HEALTH_PROVIDER_VERSION, HealthCheck, healthProvider } from "../../components/healthCheck";
import { fakeApi, fakeProgressDb, fakeV1Api, servePerTest } from "./servers";

const API_KEY = "sk_serialized_0123456789";
const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"; // pulumi's secret marker in mock inputs

const start = servePerTest();

let dir: string;
let providerFile: string;
let snapshotFile: string;
let serializedText: string;
let snapshotText: string;

beforeAll(async () => {
  // Exactly what dynamic.Resource does (serializeFunctionMaybeSecret): a closure returning the provider.
  const provider = healthProvider;
  const sf = await pulumi.runtime.serializeFunction(() => provider, { allowSecrets: true });
  expect(sf.exportName).toBe("handler");
  serializedText = sf.text;
  const snapshot = snapshotProvider;
  snapshotText = (await pulumi.runtime.serializeFunction(() => snapshot, { allowSecrets: true })).text;
  dir = mkdtempSync(join(tmpdir(), "hc-serialized-"));
  providerFile = join(dir, "provider.js");
  snapshotFile = join(dir, "snapshot.js");
  writeFileSync(providerFile, serializedText);
  writeFileSync(snapshotFile, snapshotText);
}, 60_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs `steps` (JS source of an async function body with `provider` and `snapshot` in scope) in a fresh node. */
function runInFreshNode(steps: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = `
    const fs = require("node:fs");
    const requireFromString = require("require-from-string");
    const provider = requireFromString(fs.readFileSync(${JSON.stringify(providerFile)}, "utf8")).handler();
    const snapshot = requireFromString(fs.readFileSync(${JSON.stringify(snapshotFile)}, "utf8")).handler();
    const out = {};
    const attempt = async (name, fn) => {
      try { out[name] = { ok: true, value: await fn() }; }
      catch (e) { out[name] = { ok: false, error: String(e && e.message) }; }
    };
    (async () => {
      ${steps}
      out.pulumiSdkLoaded = Object.keys(require.cache).some((p) => p.includes("@pulumi"));
      process.stdout.write(JSON.stringify(out));
    })().catch((e) => { console.error(e); process.exit(2); });
  `;
  return new Promise((resolve, reject) => {
    // process.execPath: the node running vitest (24 here), like the engine's node on PATH.
    const child = spawn(process.execPath, ["-e", script], { cwd: process.cwd(), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

type Step = { ok: true; value: Record<string, unknown> } | { ok: false; error: string };

describe("serialized provider", () => {
  it("captures no SDK and requires nothing (the ./health modules are inlined, built-ins reached through process)", () => {
    for (const text of [serializedText, snapshotText]) {
      expect(text).toContain("exports.handler");
      expect(text).not.toMatch(/@pulumi\/pulumi|__vi_import|require\(/);
    }
  });

  it("runs in a fresh node process: check, diff, create with smoke test, read, failing update", async () => {
    const good = await start(fakeApi("0.2.0", API_KEY).handler);
    const old = await start(fakeProgressDb({ version: "0.1.2" }));
    const echoing = await start(fakeApi("0.2.0", API_KEY, { method: "POST", pathPattern: /threads$/, status: 400 }).handler);
    const inputs = {
      url: good.url,
      expectedVersion: "0.2.0",
      deploymentId: "dep-1",
      timeoutSeconds: 2,
      intervalSeconds: 0.02,
      requestTimeoutSeconds: 0.5,
      smokeTest: true,
      apiKey: API_KEY,
      providerVersion: HEALTH_PROVIDER_VERSION,
    };
    const r = await runInFreshNode(`
      const inputs = ${JSON.stringify(inputs)};
      // check returns the inputs (the engine stores them, secrets encrypted): report only whether they pass through.
      const checked = async (news) => {
        const r = await provider.check({}, news);
        return { inputsUnchanged: JSON.stringify(r.inputs) === JSON.stringify(news), failures: r.failures };
      };
      await attempt("check", () => checked(inputs));
      await attempt("checkBad", () => checked({ ...inputs, apiKey: undefined }));
      await attempt("create", () => provider.create(inputs));
      const outs = out.create.ok ? out.create.value.outs : {};
      await attempt("diffSame", () => provider.diff("id", outs, inputs));
      await attempt("diffVersion", () => provider.diff("id", outs, { ...inputs, expectedVersion: "0.2.1" }));
      await attempt("read", () => provider.read("id", outs));
      await attempt("updateOld", () => provider.update("id", outs, { ...inputs, url: ${JSON.stringify(old.url)}, timeoutSeconds: 0.2 }));
      await attempt("createEcho", () => provider.create({ ...inputs, url: ${JSON.stringify(echoing.url)} }));
    `);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    // The API key is in no output, no error, nothing the process printed.
    expect(r.stdout + r.stderr).not.toContain(API_KEY);

    const out = JSON.parse(r.stdout) as Record<string, Step> & { pulumiSdkLoaded: boolean };
    expect(out.pulumiSdkLoaded).toBe(false);
    expect(out["check"]).toEqual({ ok: true, value: { inputsUnchanged: true, failures: [] } });
    expect(out["checkBad"]).toMatchObject({ ok: true, value: { failures: [{ property: "apiKey" }] } });

    const create = out["create"];
    if (!create?.ok) throw new Error(`create failed in the fresh process: ${JSON.stringify(create)}`);
    const outs = create.value["outs"];
    expect(outs).toMatchObject({ status: "healthy", reportedVersion: "0.2.0", attempts: 1, smokeResult: "passed" });
    expect(outs).not.toHaveProperty("apiKey");
    // the smoke test really ran against the live server
    expect(good.requests.filter((q) => q.method === "DELETE")).toHaveLength(2);

    expect(out["diffSame"]).toEqual({ ok: true, value: { changes: false, replaces: [], deleteBeforeReplace: false } });
    expect(out["diffVersion"]).toMatchObject({ ok: true, value: { changes: true, replaces: ["expectedVersion"] } });
    expect(out["read"]).toMatchObject({ ok: true, value: { id: "id", props: outs } });

    const upd = out["updateOld"];
    expect(upd?.ok).toBe(false);
    expect((upd as { error: string }).error).toContain("still answering 0.1.2: the old binary is running (expected 0.2.0)");
    expect(old.requests.length).toBeGreaterThan(1);

    const echo = out["createEcho"];
    expect(echo?.ok).toBe(false);
    expect((echo as { error: string }).error).toContain('smoke test failed at step "create thread"');
    expect((echo as { error: string }).error).toContain("[redacted]");
  }, 20_000);
});

describe("serialized providers: snapshot, host proof and the continuity gate", () => {
  it("run in a fresh node process: snapshot of a 0.1.x, host-proved check passes, then a lost message fails the gate without throwing", async () => {
    const ADMIN = "ak_serialized_admin_01";
    const api = fakeV1Api(API_KEY, { adminKey: ADMIN });
    api.threads.set("thread-1-1", { title: "welcome", author: "alice", deleted: false });
    api.messages.set("msg-1-2", { thread: "thread-1-1", author: "alice", body: { text: "hello" }, deleted: false });
    api.messages.set("msg-1-3", { thread: "thread-1-1", author: "bob", body: "hi", deleted: false });
    const s = await start(api.handler);
    const snapInputs = { url: s.url, dialect: "v1", version: "0.1.2", apiKey: API_KEY, adminApiKey: ADMIN, requestTimeoutSeconds: 1, sampleSize: 20, enabled: true, providerVersion: SNAPSHOT_PROVIDER_VERSION };
    const checkInputs = {
      url: s.url,
      expectedVersion: "0.1.2",
      deploymentId: "dep-1",
      versionProofMode: "host",
      hostProof: "pid 4242 listening on 127.0.0.1 runs /opt/progressdb/releases/0.1.2/progressdb",
      dialect: "v1",
      timeoutSeconds: 2,
      intervalSeconds: 0.02,
      requestTimeoutSeconds: 1,
      smokeTest: true,
      apiKey: API_KEY,
      adminApiKey: ADMIN,
      baselineVersion: "0.1.2",
      providerVersion: HEALTH_PROVIDER_VERSION,
    };
    const r = await runInFreshNode(`
      await attempt("snapshot", () => snapshot.create(${JSON.stringify(snapInputs)}));
      const sample = out.snapshot.ok ? out.snapshot.value.outs.sample : undefined;
      const inputs = { ...${JSON.stringify(checkInputs)}, baseline: sample };
      await attempt("create", () => provider.create(inputs));
      // A message disappears (as a bad migration would lose it): the next check fails the gate, not the check.
      await fetch(${JSON.stringify(s.url)} + "/v1/threads/thread-1-1/messages/msg-1-3?author=bob", { method: "DELETE", headers: { "X-API-Key": ${JSON.stringify(API_KEY)} } });
      await attempt("update", () => provider.update("id", { ...out.create.value.outs, continuity: "failed" }, inputs));
    `);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain(API_KEY);
    expect(r.stdout).not.toContain(ADMIN);
    const out = JSON.parse(r.stdout) as Record<string, Step> & { pulumiSdkLoaded: boolean };
    expect(out.pulumiSdkLoaded).toBe(false);
    const snap = out["snapshot"];
    if (!snap?.ok) throw new Error(`snapshot failed in the fresh process: ${JSON.stringify(snap)}`);
    expect(snap.value["outs"]).toMatchObject({ available: true, reason: "", sample: { available: true, stats: { threads: 1, messages: 2 }, threadsListed: 1 } });
    // No user data in clear in the snapshot's state.
    expect(JSON.stringify(snap.value)).not.toMatch(/welcome|alice|hello/);
    const created = out["create"];
    if (!created?.ok) throw new Error(`create failed in the fresh process: ${JSON.stringify(created)}`);
    expect(created.value["outs"]).toMatchObject({
      status: "healthy",
      reportedVersion: "0.1.2",
      versionProof: "host: pid 4242 listening on 127.0.0.1 runs /opt/progressdb/releases/0.1.2/progressdb",
      smokeResult: "passed",
      continuity: "passed",
      continuityMessage: "",
    });
    const updated = out["update"];
    if (!updated?.ok) throw new Error(`update threw in the fresh process: ${JSON.stringify(updated)}`);
    expect(updated.value["outs"]).toMatchObject({
      status: "healthy",
      continuity: "failed",
      continuityMessage: "0.1.2 serves 1 message in thread 'welcome' where 0.1.2 served 2: 1 missing",
    });
    expect((updated.value["outs"] as Record<string, unknown>)["runId"]).not.toBe((created.value["outs"] as Record<string, unknown>)["runId"]);
  }, 20_000);
});

describe("serialized under a CommonJS transpile (as the engine's ts-node loads the program)", () => {
  it("cross-module calls in ./health (module objects after a CommonJS transpile) serialize by value and run in a fresh node", async () => {
    const s = await start(fakeV1Api(API_KEY).handler);
    const script = join(dir, "cjs-serialize.ts");
    writeFileSync(
      script,
      `
      import * as pulumi from "@pulumi/pulumi";
      import { healthProvider } from ${JSON.stringify(join(process.cwd(), "components/healthCheck"))};
      import { snapshotProvider } from ${JSON.stringify(join(process.cwd(), "components/dataSnapshot"))};
      const requireFromString = require("require-from-string");
      (async () => {
        const h = healthProvider;
        const sn = snapshotProvider;
        const ht = (await pulumi.runtime.serializeFunction(() => h, { allowSecrets: true })).text;
        const st = (await pulumi.runtime.serializeFunction(() => sn, { allowSecrets: true })).text;
        const code = "const r = require('require-from-string'); const fs = require('fs');" +
          "const h = r(fs.readFileSync(process.argv[1], 'utf8')).handler(); const s = r(fs.readFileSync(process.argv[2], 'utf8')).handler();" +
          "(async () => { const snap = await s.create({ url: process.argv[3], dialect: 'v1', version: '0.1.2', apiKey: process.argv[4] });" +
          "const c = await h.create({ url: process.argv[3], expectedVersion: '0.1.2', deploymentId: 'd', versionProofMode: 'host', hostProof: 'p', dialect: 'v1', intervalSeconds: 0.02, apiKey: process.argv[4], dataContinuity: true, baseline: snap.outs.sample });" +
          "process.stdout.write(JSON.stringify({ snap: snap.outs.available, status: c.outs.status, continuity: c.outs.continuity })); })();";
        require("fs").writeFileSync(${JSON.stringify(join(dir, "cjs-h.js"))}, ht);
        require("fs").writeFileSync(${JSON.stringify(join(dir, "cjs-s.js"))}, st);
        const out = require("child_process").execFileSync(process.execPath, ["-e", code, ${JSON.stringify(join(dir, "cjs-h.js"))}, ${JSON.stringify(join(dir, "cjs-s.js"))}, ${JSON.stringify(s.url)}, ${JSON.stringify(API_KEY)}], { cwd: ${JSON.stringify(process.cwd())} });
        process.stdout.write(JSON.stringify({ capturedModules: (ht + st).includes("require("), result: JSON.parse(String(out)) }));
      })().catch((e) => { console.error(e); process.exit(2); });
      `,
    );
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      // The script lives in a temp dir: resolve packages from the project.
      const env = { ...process.env, NODE_PATH: join(process.cwd(), "node_modules") };
      const child = spawn(join(process.cwd(), "node_modules/.bin/tsx"), [script], { cwd: process.cwd(), env, stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
      child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, stdout, stderr }));
    });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ capturedModules: false, result: { snap: true, status: "healthy", continuity: "skipped: the baseline has no data (0 threads)" } });
  }, 60_000);
});

describe("HealthCheck resource (mocks)", () => {
  it("registers the named dynamic type with secrets wrapped, defaults, providerVersion and output slots", async () => {
    const recorded: pulumi.runtime.MockResourceArgs[] = [];
    await pulumi.runtime.setMocks(
      {
        newResource: (args) => {
          recorded.push(args);
          return {
            id: "hc-1",
            state: { ...args.inputs, status: "healthy", reportedVersion: "0.2.0", attempts: 2, elapsedMs: 10, checkedAt: "2025-01-01T00:00:00.000Z" },
          };
        },
        call: (args) => {
          throw new Error(`unexpected call ${args.token}`);
        },
      },
      "progressdb",
      "test",
      false,
    );
    const hc = new HealthCheck("db-health", {
      url: "http://10.0.0.5:8080",
      expectedVersion: "0.2.0",
      deploymentId: "install-123",
      versionProof: "readyz",
      dialect: "frontend-v1",
      headers: { Authorization: "Bearer x" },
      smokeTest: true,
      apiKey: "plain-key-given-by-mistake",
      adminApiKey: "plain-admin-key-by-mistake",
    });
    const promiseOf = <T>(o: pulumi.Output<T>): Promise<T> => new Promise((resolve) => o.apply((v) => resolve(v)));
    expect(await promiseOf(hc.status)).toBe("healthy");
    expect(await promiseOf(hc.reportedVersion)).toBe("0.2.0");
    expect(await promiseOf(hc.attempts)).toBe(2);

    expect(recorded).toHaveLength(1);
    const reg = recorded[0]!;
    expect(reg.type).toBe("pulumi-nodejs:dynamic/health:HealthCheck");
    expect(reg.name).toBe("db-health");
    expect(reg.inputs).toMatchObject({
      url: "http://10.0.0.5:8080",
      expectedVersion: "0.2.0",
      deploymentId: "install-123",
      timeoutSeconds: 120,
      intervalSeconds: 2,
      requestTimeoutSeconds: 5,
      smokeTest: true,
      // The mode travels as versionProofMode: the output versionProof is the proof text.
      versionProofMode: "readyz",
      dialect: "frontend-v1",
      providerVersion: HEALTH_PROVIDER_VERSION,
    });
    expect(reg.inputs).not.toHaveProperty("versionProof");
    // A plaintext key is still sent as a secret; so are headers.
    expect(reg.inputs["apiKey"]).toMatchObject({ [pulumi.runtime.specialSigKey]: SECRET_SIG, value: "plain-key-given-by-mistake" });
    expect(reg.inputs["adminApiKey"]).toMatchObject({ [pulumi.runtime.specialSigKey]: SECRET_SIG, value: "plain-admin-key-by-mistake" });
    expect(reg.inputs["headers"]).toMatchObject({ [pulumi.runtime.specialSigKey]: SECRET_SIG });
    // The provider was serialized under vitest too.
    expect(String(reg.inputs["__provider"])).toContain("exports.handler");
  }, 20_000);

  it("DataSnapshot registers the named dynamic type, keys as secrets, defaults and output slots", async () => {
    const recorded: pulumi.runtime.MockResourceArgs[] = [];
    await pulumi.runtime.setMocks(
      {
        newResource: (args) => {
          recorded.push(args);
          return { id: "snap-1", state: { ...args.inputs, available: false, reason: "mocked" } };
        },
        call: (args) => {
          throw new Error(`unexpected call ${args.token}`);
        },
      },
      "progressdb",
      "test",
      false,
    );
    const snap = new DataSnapshot("db-snapshot", { url: "http://10.0.0.5:8080", dialect: "v1", version: "0.2.1", apiKey: "plain-backend", adminApiKey: "plain-admin" });
    const promiseOf = <T>(o: pulumi.Output<T>): Promise<T> => new Promise((resolve) => o.apply((v) => resolve(v)));
    expect(await promiseOf(snap.reason)).toBe("mocked");
    const reg = recorded[0]!;
    expect(reg.type).toBe("pulumi-nodejs:dynamic/snapshot:DataSnapshot");
    expect(reg.inputs).toMatchObject({ url: "http://10.0.0.5:8080", dialect: "v1", version: "0.2.1", requestTimeoutSeconds: 5, sampleSize: 20, enabled: true, providerVersion: SNAPSHOT_PROVIDER_VERSION });
    expect(reg.inputs["apiKey"]).toMatchObject({ [pulumi.runtime.specialSigKey]: SECRET_SIG, value: "plain-backend" });
    expect(reg.inputs["adminApiKey"]).toMatchObject({ [pulumi.runtime.specialSigKey]: SECRET_SIG, value: "plain-admin" });
    expect(String(reg.inputs["__provider"])).toContain("exports.handler");
  }, 20_000);
});
