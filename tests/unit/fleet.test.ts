// Fleets: progressdb:instances parsed into one config per instance, the rolling order of the
// resource graph, per-instance backups and outputs, and the promotion gate.
import { describe, expect, test } from "vitest";
import { ConfigError } from "../../components/config";
import { parseInstances } from "../../components/fleet/instances";
import { promotionVerdict, verifiedHere, verifiedVersionsAfter } from "../../components/fleet/promotion";
import { instanceHistory } from "../../components/fleet/history";
import { ProgramRun, runProgram } from "./programHarness";
import { TEST_HOST_KEY, TEST_SECRETS, binaryConfig, rawConfig } from "./fixtures";

const SECRET_KEYS = Object.keys(TEST_SECRETS);

/** Instance `name` on the local test host, on its own port, dirs and service name. */
function entry(name: string, port: number, extra: Record<string, unknown> = {}) {
  return {
    name,
    healthUrl: `http://127.0.0.1:${port}`,
    deployment: { binary: { installDir: `/srv/${name}/opt`, serviceName: `progressdb-${name}`, listenAddr: `127.0.0.1:${port}` } },
    storage: { dbPath: `/srv/${name}/data` },
    ...extra,
  };
}

function fleetConfig(version: string, names = ["a", "b", "c"], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { ...binaryConfig(version), instances: names.map((n, i) => entry(n, 18180 + i)), ...extra };
}

function run(config: Record<string, unknown>, previous: Record<string, unknown> = {}, otherStacks: Record<string, Record<string, unknown>> = {}): Promise<ProgramRun> {
  return runProgram({ ...config, ...TEST_SECRETS }, SECRET_KEYS, previous, otherStacks);
}

function problemsOf(f: () => unknown): string[] {
  try {
    f();
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  throw new Error("expected a ConfigError");
}

const deps = (r: ProgramRun, dependent: string) => r.byName(dependent).dependencies;
const urn = (r: ProgramRun, name: string) => r.byName(name).urn;

describe("parseInstances", () => {
  test("without instances, the stack's own config is a fleet of one with the names and backup keys it always had", () => {
    const [only, ...rest] = parseInstances(rawConfig(binaryConfig("0.2.1")), "prod");
    expect(rest).toEqual([]);
    expect(only).toMatchObject({ name: "default", resourceName: "progressdb", backupScope: "prod", listed: false, index: 0 });
  });

  test("each instance is the stack's config with its overrides laid over it", () => {
    const [a, b] = parseInstances(rawConfig(fleetConfig("0.2.1", ["a", "b"])), "prod");
    expect(a).toMatchObject({ name: "a", resourceName: "progressdb-a", backupScope: "prod/a", listed: true });
    expect(b.settings.deployment.binary).toMatchObject({ installDir: "/srv/b/opt", serviceName: "progressdb-b", listenAddr: "127.0.0.1:18181", serviceManager: "process" });
    expect(b.settings.storage.dbPath).toBe("/srv/b/data");
    expect(b.settings.health.url).toBe("http://127.0.0.1:18181");
    // What the instance does not override comes from the stack.
    expect(b.settings.health.timeoutSeconds).toBe(60);
    expect(b.settings.deployment.host.hostKey).toBe(TEST_HOST_KEY);
  });

  test("a problem in an instance's override names the instance's own key and its fix", () => {
    const config = fleetConfig("0.2.1", ["a", "b"]);
    (config.instances as Record<string, unknown>[])[1].storage = { dbPath: "relative/data" };
    const problems = problemsOf(() => parseInstances(rawConfig(config), "prod"));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^instance "b": progressdb:instances\[1\]\.storage\.dbPath /);
  });

  test("an instance on another host must pin that host's key", () => {
    const config = fleetConfig("0.2.1", ["a", "b"]);
    (config.instances as Record<string, unknown>[])[1].host = { address: "10.0.0.7" };
    expect(problemsOf(() => parseInstances(rawConfig(config), "prod")).join("\n")).toContain("progressdb:instances[1].host.hostKey is required when the instance has its own address");
  });

  test("two instances that would share a data dir, install dir, service or health URL are refused, naming both", () => {
    const config = { ...binaryConfig("0.2.1"), instances: [entry("a", 18180), { ...entry("b", 18181), storage: { dbPath: "/srv/a/data" } }] };
    const problems = problemsOf(() => parseInstances(rawConfig(config), "prod"));
    expect(problems).toEqual([expect.stringMatching(/^progressdb:instances: "a" and "b" have the same data dir \(127\.0\.0\.1:2222 \/srv\/a\/data\)/)]);
    const same = { ...binaryConfig("0.2.1"), instances: [{ name: "a" }, { name: "b" }] };
    expect(problemsOf(() => parseInstances(rawConfig(same), "prod")).join("\n")).toMatch(/same health URL[\s\S]*same data dir[\s\S]*same install dir[\s\S]*same service name/);
  });

  test("names must be unique and well-formed; an empty list is no list; mode is stack-wide", () => {
    expect(problemsOf(() => parseInstances(rawConfig({ ...binaryConfig(), instances: [entry("a", 1), entry("a", 2)] }), "p")).join("\n")).toContain('progressdb:instances[1].name "a" is used twice');
    expect(problemsOf(() => parseInstances(rawConfig({ ...binaryConfig(), instances: [entry("EU_1", 1)] }), "p"))[0]).toMatch(/^progressdb:instances\[0\]\.name must be 1–32 lowercase/);
    expect(parseInstances(rawConfig({ ...binaryConfig(), instances: [] }), "p").map((i) => i.name)).toEqual(["default"]);
    expect(problemsOf(() => parseInstances(rawConfig({ ...binaryConfig(), instances: [{ ...entry("a", 1), deployment: { mode: "container" } }] }), "p"))[0]).toMatch(/^progressdb:instances\[0\]\.deployment may override binary and container settings only/);
  });
});

describe("the rolling graph", () => {
  test("a single-instance stack keeps its URNs: the same names, under the same parent, and no alias", async () => {
    const r = await run(binaryConfig("0.2.1"), { version: "0.2.0" });
    const root = r.byName("progressdb");
    expect(root.urn).toBe("urn:pulumi:test::progressdb::progressdb:index:ProgressDb::progressdb");
    // (The mocks' URNs name the parent's type only; the engine's name the whole chain.)
    expect(urn(r, "progressdb-deploy-install")).toBe("urn:pulumi:test::progressdb::progressdb:deploy:BinaryDeployment$command:remote:Command::progressdb-deploy-install");
    expect(root.aliases).toEqual([]);
    expect(r.registrations.filter((x) => x.name.startsWith("progressdb-a")).length).toBe(0);
  });

  test("listing instances: the first takes over the single instance's resources through an alias", async () => {
    const r = await run(fleetConfig("0.2.1", ["a", "b"]), { version: "0.2.1" });
    expect(r.byName("progressdb-a").aliases).toEqual(["progressdb"]);
    expect(r.byName("progressdb-b").aliases).toEqual([]);
  });

  test("all preflights come before anything stops; then one instance at a time, in list order", async () => {
    const r = await run(fleetConfig("0.2.1"), { instances: { a: { version: "0.2.0" }, b: { version: "0.2.0" }, c: { version: "0.2.0" } } });
    const preflights = ["a", "b", "c"].map((n) => urn(r, `progressdb-${n}-preflight-check`));
    // The first step that reads or stops an instance waits for every instance's preflight.
    for (const n of ["a", "b", "c"]) {
      expect(deps(r, `progressdb-${n}-snapshot`)).toEqual(expect.arrayContaining(preflights));
    }
    // ... and for the whole chain of the instance before it.
    expect(deps(r, "progressdb-b-snapshot")).toContain(urn(r, "progressdb-a-finalize-commit"));
    expect(deps(r, "progressdb-c-snapshot")).toContain(urn(r, "progressdb-b-finalize-commit"));
    expect(deps(r, "progressdb-a-snapshot")).not.toContain(urn(r, "progressdb-b-finalize-commit"));
    // Preflights wait for nothing of another instance.
    for (const n of ["a", "b", "c"]) {
      expect(deps(r, `progressdb-${n}-preflight-check`).filter((d) => /::progressdb-[abc]-/.test(d) && !d.includes(`::progressdb-${n}-`))).toEqual([]);
    }
  });

  test("the canary smoke-tests (an API key is set) and bakes; the others follow the stack's setting", async () => {
    const r = await run(fleetConfig("0.2.1", ["a", "b"], { rollout: { canaryPauseSeconds: 30 } }), {});
    expect(r.byName("progressdb-a-health").inputs).toMatchObject({ smokeTest: true, bakeSeconds: 30 });
    expect(r.byName("progressdb-b-health").inputs).toMatchObject({ smokeTest: false });
    expect(r.byName("progressdb-b-health").inputs.bakeSeconds).toBeUndefined();
    expect(String(r.byName("progressdb-b-health").inputs.fleetNote)).toBe(
      "rollout of 0.2.1 over a → b, one at a time: a runs 0.2.1; b failed and is back on the version it ran. Fix the cause and run pulumi up again: the rollout continues at b.",
    );
  });

  test("backup keys include the instance", async () => {
    const r = await run(fleetConfig("0.2.1", ["a", "b"]), {});
    expect(String(r.byName("progressdb-b-backup-upload").inputs.create)).toMatch(/^PDB_STACK='test\/b'$/m);
    expect(String(r.byName("progressdb-a-backup-upload").inputs.create)).toMatch(/^PDB_STACK='test\/a'$/m);
  });

  test("the downgrade guard works per instance, and names the instance", async () => {
    const previous = { instances: { a: { version: "0.2.1" }, b: { version: "0.2.2" } } };
    await expect(run(fleetConfig("0.2.1", ["a", "b"]), previous)).rejects.toThrow(/^instance "b": progressdb:version 0\.2\.1 is lower than the deployed 0\.2\.2/);
  });

  test("outputs hold each instance and a fleet summary", async () => {
    const r = await run(fleetConfig("0.2.1", ["a", "b"]), {});
    expect(r.outputs.version).toBe("0.2.1");
    expect(r.outputs.fleet).toEqual({ version: "0.2.1", instances: ["a 0.2.1", "b 0.2.1"] });
  });
});

describe("instanceHistory", () => {
  const a = { name: "a", index: 0, listed: true } as Parameters<typeof instanceHistory>[1];
  const b = { name: "b", index: 1, listed: true } as Parameters<typeof instanceHistory>[1];
  test("reads the instance's own outputs; a pre-fleet stack's top-level outputs belong to the first instance only", () => {
    expect(instanceHistory({ instances: { a: { version: "0.2.0" }, b: { version: "0.2.1" } } }, b, "0.2.1").deployed).toBe("0.2.1");
    expect(instanceHistory({ version: "0.2.0", previousVersion: "0.1.2" }, a, "0.2.1")).toMatchObject({ deployed: "0.2.0", from: "0.2.0" });
    expect(instanceHistory({ version: "0.2.0" }, b, "0.2.1").deployed).toBeUndefined();
    expect(instanceHistory({ instances: { default: { version: "0.2.0" } } }, a, "0.2.1").deployed).toBe("0.2.0");
  });
});

describe("the promotion gate", () => {
  const gate = { requireVerifiedBy: "organization/progressdb/staging" };
  test("refuses a version the gating stack has not verified, naming the key, the stack, its versions and both ways on", () => {
    const v = promotionVerdict("0.2.1", ["0.2.0", "0.2.0"], gate, { versions: ["0.2.0", "0.1.2"] });
    expect(v?.refusal).toContain("progressdb:version 0.2.1 has not been verified by organization/progressdb/staging (progressdb:promotion.requireVerifiedBy): it has verified 0.1.2, 0.2.0. Nothing was changed.");
    expect(v?.refusal).toContain("pulumi config set --path progressdb:promotion.override.version 0.2.1");
  });
  test("lets a verified version through, and anything when no instance changes version", () => {
    expect(promotionVerdict("0.2.1", ["0.2.0"], gate, { versions: ["0.2.1"] })).toBeUndefined();
    expect(promotionVerdict("0.2.1", ["0.2.1", "0.2.1"], gate, { versions: [] })).toBeUndefined();
    expect(promotionVerdict("0.2.1", ["0.2.0"], {}, { versions: [] })).toBeUndefined();
  });
  test("an unreadable or silent gating stack refuses too; the override is for its one version only", () => {
    expect(promotionVerdict("0.2.1", [undefined], gate, { error: "unknown stack" })?.refusal).toContain("its outputs could not be read (unknown stack)");
    expect(promotionVerdict("0.2.1", ["0.2.0"], gate, { versions: undefined })?.refusal).toContain("it exports no verifiedVersions");
    const override = { ...gate, override: { version: "0.2.1", reason: "hotfix for incident 42" } };
    expect(promotionVerdict("0.2.1", ["0.2.0"], override, { versions: [] })).toEqual({ override: expect.stringContaining('overridden by progressdb:promotion.override: "hotfix for incident 42"') });
    expect(promotionVerdict("0.2.2", ["0.2.0"], override, { versions: [] })?.refusal).toBeDefined();
  });
  test("verifiedVersions grows only with a version that passed health, continuity and the canary's smoke test, and never shrinks", () => {
    const ok = { status: "healthy", smokeResult: "passed", continuity: "passed" };
    expect(verifiedHere([ok, { ...ok, smokeResult: "skipped" }])).toBe(true);
    expect(verifiedHere([{ ...ok, smokeResult: "skipped" }])).toBe(false);
    expect(verifiedHere([ok, { ...ok, continuity: "failed" }])).toBe(false);
    expect(verifiedVersionsAfter(["0.2.1", "0.1.2"], "0.2.0", true)).toEqual(["0.1.2", "0.2.0", "0.2.1"]);
    expect(verifiedVersionsAfter(["0.2.1"], "0.2.0", false)).toEqual(["0.2.1"]);
  });
  test("in the program: refused before any resource exists; the override is exported", async () => {
    const staging = { "organization/progressdb/staging": { verifiedVersions: ["0.2.0"] } };
    const config = fleetConfig("0.2.1", ["a", "b"], { promotion: gate });
    const err = await run(config, { instances: { a: { version: "0.2.0" }, b: { version: "0.2.0" } } }, staging).catch((e: Error & { registrations: { type: string }[] }) => e);
    expect(String(err)).toContain("has not been verified by organization/progressdb/staging");
    expect((err as { registrations: { type: string }[] }).registrations.filter((x) => !x.type.startsWith("pulumi:pulumi:StackReference"))).toEqual([]);
    const overridden = await run({ ...config, promotion: { ...gate, override: { version: "0.2.1", reason: "hotfix for incident 42" } } }, {}, staging);
    expect(overridden.registrations.some((x) => x.name === "progressdb-b-deploy-install")).toBe(true);
  });
});
