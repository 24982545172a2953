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
import { HEALTH_PROVIDER_VERSION, HealthCheck, healthProvider } from "../../components/healthCheck";
import { fakeApi, fakeProgressDb, servePerTest } from "./servers";

const API_KEY = "sk_serialized_0123456789";
const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"; // pulumi's secret marker in mock inputs

const start = servePerTest();

let dir: string;
let providerFile: string;
let serializedText: string;

beforeAll(async () => {
  // Exactly what dynamic.Resource does (serializeFunctionMaybeSecret): a closure returning the provider.
  const provider = healthProvider;
  const sf = await pulumi.runtime.serializeFunction(() => provider, { allowSecrets: true });
  expect(sf.exportName).toBe("handler");
  serializedText = sf.text;
  dir = mkdtempSync(join(tmpdir(), "hc-serialized-"));
  providerFile = join(dir, "provider.js");
  writeFileSync(providerFile, serializedText);
}, 60_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs `steps` (JS source of an async function body with `provider` in scope) in a fresh node. */
function runInFreshNode(steps: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = `
    const fs = require("node:fs");
    const requireFromString = require("require-from-string");
    const provider = requireFromString(fs.readFileSync(${JSON.stringify(providerFile)}, "utf8")).handler();
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
  it("captures no module objects (no SDK, no import bindings)", () => {
    expect(serializedText).toContain("exports.handler");
    expect(serializedText).not.toMatch(/@pulumi\/pulumi|__vi_import|__vite_ssr|healthPoll_1|require\("\.\//);
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
      headers: { Authorization: "Bearer x" },
      smokeTest: true,
      apiKey: "plain-key-given-by-mistake",
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
      providerVersion: HEALTH_PROVIDER_VERSION,
    });
    // A plaintext key is still sent as a secret; so are headers.
    expect(reg.inputs["apiKey"]).toMatchObject({ [pulumi.runtime.specialSigKey]: SECRET_SIG, value: "plain-key-given-by-mistake" });
    expect(reg.inputs["headers"]).toMatchObject({ [pulumi.runtime.specialSigKey]: SECRET_SIG });
    // The provider was serialized under vitest too.
    expect(String(reg.inputs["__provider"])).toContain("exports.handler");
  }, 20_000);
});
