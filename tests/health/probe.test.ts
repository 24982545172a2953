// The drift probe: what it sees of a live service, and its provider serialized
// and run in a fresh node process (the engine runs it that way on every
// preview and up).
import { spawn } from "node:child_process";
import * as http from "node:http";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { probeService } from "../../components/health/probe";
import { probeProvider } from "../../components/serviceProbe";

type Answer = (path: string) => { status: number; body: string };
const servers: http.Server[] = [];

async function serve(answer: Answer): Promise<string> {
  const s = http.createServer((req, res) => {
    const a = answer(req.url ?? "/");
    res.writeHead(a.status, { "Content-Type": "application/json" }).end(a.body);
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  return `http://127.0.0.1:${(s.address() as { port: number }).port}`;
}

/** 0.2.x: /readyz public, with its version (releases-as-built.md §4). */
const v02 = (version: string): Answer => (p) => (p === "/healthz" ? { status: 200, body: '{"status":"ok"}' } : { status: 200, body: `{"status":"ok","version":"${version}"}` });
/** 0.1.x: no /readyz: 401 without a key (§4). */
const v01: Answer = (p) => (p === "/healthz" ? { status: 200, body: '{"status":"ok"}' } : { status: 401, body: "unauthorized\n" });

afterAll(() => servers.forEach((s) => s.close()));

describe("probeService", () => {
  test("0.2.x answering the configured version (a leading v ignored): ok", async () => {
    expect(await probeService({ url: await serve(v02("v0.2.1")), expectedVersion: "0.2.1", versionProofMode: "readyz" })).toMatchObject({ ok: true });
  });
  test("another version answering (the gate reverted the upgrade): drift, naming it", async () => {
    const r = await probeService({ url: await serve(v02("v0.2.1")), expectedVersion: "0.2.4", versionProofMode: "readyz" });
    expect(r).toEqual({ ok: false, seen: '/readyz reports "v0.2.1", not 0.2.4' });
  });
  test("a 0.1.x release (no /readyz) where 0.1.x is configured: ok; where 0.2.x is: drift", async () => {
    const url = await serve(v01);
    expect((await probeService({ url, expectedVersion: "0.1.2", versionProofMode: "host" })).ok).toBe(true);
    expect(await probeService({ url, expectedVersion: "0.2.1", versionProofMode: "readyz" })).toEqual({ ok: false, seen: "/readyz answered HTTP 401" });
  });
  test("a 0.2.x answering where 0.1.x is configured: drift", async () => {
    expect((await probeService({ url: await serve(v02("v0.2.1")), expectedVersion: "0.1.2", versionProofMode: "host" })).ok).toBe(false);
  });
  test("nothing listening: drift, naming the connection error", async () => {
    const s = http.createServer();
    await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
    const port = (s.address() as { port: number }).port;
    await new Promise<void>((r) => s.close(() => r()));
    const r = await probeService({ url: `http://127.0.0.1:${port}`, expectedVersion: "0.2.1", versionProofMode: "readyz", timeoutMs: 1000 });
    expect(r.ok).toBe(false);
    expect(r.seen).toMatch(/does not answer \/healthz \(.*(ECONNREFUSED|refused)/i);
  });
});

test("a new URL (listen address change) is probed where the service still is: the old URL", async () => {
  const ok = await serve(v02("v0.2.1"));
  const nowhere = "http://127.0.0.1:9";
  const checked = await probeProvider.check!({ url: ok }, { url: nowhere, expectedVersion: "0.2.1", versionProofMode: "readyz" });
  expect(checked.inputs["drift"]).toBe("");
  const fresh = await probeProvider.check!({}, { url: nowhere, expectedVersion: "0.2.1", versionProofMode: "readyz" });
  expect(String(fresh.inputs["drift"])).toMatch(/^0\.2\.1 is not the version answering/);
});

describe("the probe provider, serialized and run in a fresh node process", () => {
  let dir: string;
  beforeAll(async () => {
    const provider = probeProvider;
    const text = (await pulumi.runtime.serializeFunction(() => provider, { allowSecrets: true })).text;
    expect(text).not.toMatch(/require\(/);
    dir = mkdtempSync(join(tmpdir(), "probe-serialized-"));
    writeFileSync(join(dir, "probe.js"), text);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("check records a drift, diff replaces on it and only on it; create gives an epoch, update keeps it", async () => {
    const ok = await serve(v02("v0.2.1"));
    const script = `
      const p = require("require-from-string")(require("node:fs").readFileSync(${JSON.stringify(join(dir, "probe.js"))}, "utf8")).handler();
      (async () => {
        const base = { url: ${JSON.stringify(ok)}, versionProofMode: "readyz", providerVersion: "1" };
        const fine = (await p.check({}, { ...base, expectedVersion: "0.2.1" })).inputs;
        const drifted = (await p.check({}, { ...base, expectedVersion: "0.2.4" })).inputs;
        const created = (await p.create(fine)).outs;
        const same = await p.diff("id", created, fine);
        const drift = await p.diff("id", created, drifted);
        const updated = (await p.update("id", created, { ...fine, url: fine.url + "/" })).outs;
        process.stdout.write(JSON.stringify({ fine: fine.drift, drifted: drifted.drift, epoch: created.epoch, same, drift, kept: updated.epoch === created.epoch }));
      })().catch((e) => { console.error(e); process.exit(2); });`;
    const out = await new Promise<string>((resolve, reject) => {
      const c = spawn(process.execPath, ["-e", script], { cwd: process.cwd() });
      let o = "";
      let e = "";
      c.stdout.on("data", (d: Buffer) => (o += d));
      c.stderr.on("data", (d: Buffer) => (e += d));
      c.on("close", (code) => (code === 0 ? resolve(o) : reject(new Error(e))));
    });
    const r = JSON.parse(out);
    expect(r.fine).toBe("");
    expect(r.drifted).toBe('0.2.4 is not the version answering: /readyz reports "v0.2.1", not 0.2.4');
    expect(r.epoch).toMatch(/^[0-9a-f]{8}$/);
    expect(r.same).toEqual({ changes: false, replaces: [] });
    expect(r.drift).toMatchObject({ changes: true, replaces: ["drift"] });
    expect(r.kept).toBe(true);
  });
});
