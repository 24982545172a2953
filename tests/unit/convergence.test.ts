// Every config key, changed alone: which resources the engine would replace,
// update or leave alone. The classes are the README's "what a change does"
// table; a host step that stops the service is only ever replaced together
// with the install and the checks after it.
import { describe, expect, test } from "vitest";
import { settingsKeys } from "../../components/config";
import { diffInputs } from "../../components/health/inputs";
import { diffSnapshotInputs } from "../../components/health/snapshot";
import { ProgramRun, Registration, runProgram } from "./programHarness";
import { TEST_SECRETS, binaryConfig, containerConfig } from "./fixtures";

type Change = "replace" | "update" | "create" | "delete";

/** What the engine would do to each custom resource going from `a` to `b`. */
function plan(a: ProgramRun, b: ProgramRun): Record<string, Change> {
  const out: Record<string, Change> = {};
  const custom = (r: ProgramRun) => r.registrations.filter((x) => x.custom && x.type !== "pulumi:pulumi:StackReference");
  const same = (x: unknown, y: unknown) => JSON.stringify(x ?? null) === JSON.stringify(y ?? null);
  for (const old of custom(a)) {
    const neu = b.registrations.find((x) => x.name === old.name);
    if (!neu) {
      out[old.name] = "delete";
      continue;
    }
    const changed = Object.keys({ ...old.inputs, ...neu.inputs }).filter((k) => !same(old.inputs[k], neu.inputs[k]));
    if (changed.length === 0) continue;
    if (old.type === "command:remote:Command") out[old.name] = changed.includes("triggers") ? "replace" : "update";
    else if (old.type.endsWith("health:HealthCheck")) out[old.name] = diffInputs(old.inputs, neu.inputs).replaces.length ? "replace" : "update";
    else if (old.type.endsWith("snapshot:DataSnapshot")) out[old.name] = diffSnapshotInputs(old.inputs, neu.inputs).replaces.length ? "replace" : "update";
    else if (old.type.startsWith("docker:")) out[old.name] = "replace";
    else out[old.name] = "update";
  }
  for (const neu of custom(b)) if (!a.registrations.some((x) => x.name === neu.name)) out[neu.name] = "create";
  return out;
}

function setPath(config: Record<string, unknown>, path: string, value: unknown): Record<string, unknown> {
  const copy = structuredClone(config);
  const keys = path.split(".");
  let o = copy as Record<string, unknown>;
  for (const k of keys.slice(0, -1)) o = (o[k] ??= {}) as Record<string, unknown>;
  o[keys.at(-1)!] = value;
  return copy;
}

const SECRET_KEYS = [...Object.keys(TEST_SECRETS), "frontendApiKey"];
const DEPLOYED = {
  version: "0.2.1",
  // The backup a restore of "before:0.2.1" resolves to.
  backupLedger: [{ uri: "s3://backups/progressdb-backups/test/20260101T000000Z-0.2.0-to-0.2.1.tar.gz", sha256: "c".repeat(64), fromVersion: "0.2.0", toVersion: "0.2.1", at: "20260101T000000Z" }],
};
const base = (): Record<string, unknown> => ({ ...binaryConfig("0.2.1"), ...TEST_SECRETS });
// The stack a promotion gate may name (promotion.requireVerifiedBy, below).
const STAGING = { "organization/progressdb/staging": { verifiedVersions: ["0.2.1"] } };
const run = (config: Record<string, unknown>) => runProgram(config, SECRET_KEYS, DEPLOYED, STAGING);

/** Host steps that stop the service when they really run: only a new upgrade may replace them. */
const STOPPING = ["progressdb-backup-upload", "progressdb-migrate-data", "progressdb-restore-data"];
/** Host steps safe to re-run on an update: each finds its work done on the host and stops nothing. */
const RERUNNABLE = ["progressdb-preflight-check", "progressdb-backup-upload", "progressdb-offsite-upload", "progressdb-migrate-data", "progressdb-deploy-install", "progressdb-finalize-commit"];

type Class = "upgrade" | "restart" | "no host action" | "health check only" | "nothing";

/** Every key of the schema (leaf paths), changed alone, and what that change must mean. */
const MATRIX: Array<[string, unknown, Class]> = [
  ["version", "0.2.2", "upgrade"],
  ["deployment.binary.listenAddr", "127.0.0.1:18081", "restart"],
  ["deployment.binary.serviceName", "progressdb-b", "restart"],
  ["deployment.binary.keepReleases", 5, "no host action"],
  ["deployment.binary.minFreeMb", 1024, "no host action"],
  ["deployment.binary.artifactUrl", "http://127.0.0.1:18091/{version}/progressdb_{version}_linux_{arch}.tar.gz", "no host action"],
  ["deployment.binary.checksumsUrl", "http://127.0.0.1:18091/{version}/checksums.txt", "no host action"],
  ["deployment.binary.sha256", "a".repeat(64), "no host action"],
  ["deployment.host.port", 2223, "no host action"],
  ["deployment.host.user", "deploy", "no host action"],
  ["deployment.host.awsCli", "/usr/local/bin/aws", "no host action"],
  ["deployment.host.hostKey", "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGuZRy8WQfZ+1ib3Y6mC4Vw4n6Zk9zqXhJ3u1y5bP0oF", "no host action"],
  ["deployment.host.insecureSkipHostKeyCheck", true, "no host action"],
  ["deployment.binary.serviceUser", "pdb", "restart"],
  ["service.rateLimit.rps", 50, "restart"],
  ["service.rateLimit.burst", 400, "restart"],
  ["service.maxPayloadSize", "1MB", "restart"],
  ["service.encryptFields", ["body"], "restart"],
  ["service.logLevel", "debug", "restart"],
  ["apiKey", "rotated-backend-key", "restart"],
  ["adminApiKey", "rotated-admin-key", "restart"],
  ["signingKey", "rotated-signing-key", "restart"],
  ["frontendApiKey", "new-frontend-key", "restart"],
  ["kmsMasterKeyHex", "8".repeat(64), "restart"],
  ["sshPrivateKey", "-----ROTATED TEST SSH KEY-----", "no host action"],
  ["s3AccessKeyId", "ROTATEDACCESSKEY", "no host action"],
  ["s3SecretAccessKey", "rotated-s3-secret", "no host action"],
  ["backup.prefix", "other-prefix", "no host action"],
  ["backup.offsiteBeforeStart", true, "no host action"],
  ["backup.endpoint", "http://127.0.0.1:19001", "no host action"],
  ["backup.region", "eu-west-1", "no host action"],
  ["backup.bucket", "backups-2", "no host action"],
  ["backup.retentionDays", 7, "nothing"],
  ["backup.objectLockDays", 7, "nothing"],
  ["health.timeoutSeconds", 90, "no host action"],
  ["health.intervalSeconds", 3, "health check only"],
  ["health.requestTimeoutSeconds", 7, "health check only"],
  ["health.headers", { "X-Proxy": "1" }, "health check only"],
  ["health.smokeTest", true, "health check only"],
  ["health.autoRevert", false, "no host action"],
  ["health.dataContinuity", false, "no host action"],
  ["health.allowPlaintextHttp", true, "nothing"],
  ["allowDowngrade", true, "nothing"],
  // A stack of one instance has no canary; the gate applies only when the version changes.
  ["rollout.canaryPauseSeconds", 30, "nothing"],
  ["promotion.requireVerifiedBy", "organization/progressdb/staging", "nothing"],
  ["promotion.override", { version: "0.2.2", reason: "hotfix for incident 42" }, "nothing"],
];

describe("every config key, changed alone, converges (binary mode, deployed 0.2.1)", () => {
  test.each(MATRIX)("%s → %j: %s", async (key, value, cls) => {
    const before = await run(base());
    const after = await run(SECRET_KEYS.includes(key) ? { ...base(), [key]: value } : setPath(base(), key, value));
    const p = plan(before, after);
    const replaced = Object.keys(p).filter((n) => p[n] === "replace");
    // No step that stops the service is replaced without the install and the checks after it.
    if (replaced.some((n) => STOPPING.includes(n))) {
      expect(replaced).toEqual(expect.arrayContaining(["progressdb-deploy-install", "progressdb-health"]));
    }
    // Updates (a change of a step's other inputs) only ever touch steps that are safe to re-run.
    for (const [name, change] of Object.entries(p)) {
      if (change === "update" && !["progressdb-health", "progressdb-snapshot", "progressdb-probe"].includes(name)) {
        expect(RERUNNABLE, `${name} is updated`).toContain(name);
      }
    }
    switch (cls) {
      case "upgrade":
        expect(replaced).toEqual(
          expect.arrayContaining(["progressdb-preflight-check", "progressdb-snapshot", "progressdb-backup-upload", "progressdb-migrate-data", "progressdb-deploy-install", "progressdb-health"]),
        );
        break;
      case "restart":
        // (The health check follows: its deploymentId is the install's id, which a replace renews.)
        expect(p["progressdb-deploy-install"], JSON.stringify(p)).toBe("replace");
        for (const n of STOPPING) expect(p[n], n).not.toBe("replace");
        break;
      case "no host action":
        expect(replaced.filter((n) => n !== "progressdb-health"), JSON.stringify(p)).toEqual([]);
        break;
      case "health check only":
        expect(Object.keys(p).filter((n) => !["progressdb-health", "progressdb-snapshot", "progressdb-probe"].includes(n)), JSON.stringify(p)).toEqual([]);
        break;
      case "nothing":
        expect(Object.keys(p).filter((n) => !n.startsWith("progressdb-bucket"))).toEqual([]);
        break;
    }
  });

  test("a restore request runs the restore, the install and the checks; clearing it runs nothing", async () => {
    const withRestore = await run(setPath(base(), "restore.backup", "before:0.2.1"));
    const p = plan(await run(base()), withRestore);
    expect(p["progressdb-restore-data"]).toBe("create");
    // A restore streams its backup (no snapshot): the step's text says so, a change that only
    // repeats the result it recorded for this upgrade (a new upgrade would back up for real).
    expect(p["progressdb-backup-upload"]).toBe("update");
    const cleared = plan(withRestore, await run(base()));
    expect(cleared).toMatchObject({ "progressdb-restore-data": "delete" });
    // Only the health check re-runs (its deploymentId no longer names the restore): nothing on the host.
    expect(Object.keys(cleared).filter((n) => cleared[n] === "replace")).toEqual(["progressdb-health"]);
  });

  test("a no-op is a no-op", async () => {
    expect(plan(await run(base()), await run(base()))).toEqual({});
  });
});

describe("container mode: a config-only change re-creates the container on the new config, nothing stops first", () => {
  test("a rate-limit change writes the config and replaces the container, without a backup", async () => {
    const cbase = () => ({ ...containerConfig("0.2.1"), ...TEST_SECRETS });
    const before = await run(cbase());
    const p = plan(before, await run(setPath(cbase(), "service.rateLimit.rps", 50)));
    expect(p).toMatchObject({ "progressdb-deploy-config": "replace", "progressdb-deploy-container": "replace" });
    expect(p["progressdb-backup-upload"]).toBeUndefined();
  });
});

// Keep the matrix honest: it names every leaf key the schema accepts.
test("the matrix covers every schema key", () => {
  const covered = new Set(MATRIX.map(([k]) => k));
  const missing = settingsKeys().filter((k) => ![...covered].some((c) => c === k || k.startsWith(`${c}.`) || c.startsWith(`${k}.`)));
  expect(missing.sort()).toEqual([...NOT_IN_MATRIX].sort());
});

/** Keys the matrix leaves out, each with its reason in the README's table. */
const NOT_IN_MATRIX = [
  // Switching mode, moving the data, the install dir or the service manager are migrations of the
  // host, not changes the program performs in place: the README says how to do them.
  "deployment.mode",
  "deployment.host.address",
  "deployment.binary.installDir",
  "deployment.binary.serviceManager",
  "deployment.binary.arch",
  "deployment.binary.configFile",
  // Container mode's own keys re-create the container (see the container case above): the data
  // stays on the host mount and the image is kept locally.
  "deployment.container.image",
  "deployment.container.digest",
  "deployment.container.dockerHost",
  "deployment.container.name",
  "deployment.container.ports",
  "deployment.container.env",
  "deployment.container.restart",
  "deployment.container.healthcheck",
  "storage.dbPath",
  "storage.kmsDataDir",
  "kms.mode",
  "backup.enabled",
  "backup.createBucket",
  "health.url",
  "health.caCertPem",
  "restore.backup",
  // Only read together with restore.backup (the case above).
  "restore.sha256",
];

export type { Registration };
