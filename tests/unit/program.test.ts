// The resource graph under Pulumi mocks: what is created, in which order, what
// a version change touches, and that secrets stay secret on the wire.
import { describe, expect, test } from "vitest";
import { ProgramRun, Registration, SECRET_SIG, runProgram } from "./programHarness";
import { TEST_SECRETS, binaryConfig, containerConfig } from "./fixtures";

const SECRET_KEYS = Object.keys(TEST_SECRETS);

function run(config: Record<string, unknown>, previousOutputs: Record<string, unknown> = {}): Promise<ProgramRun> {
  return runProgram({ ...config, ...TEST_SECRETS }, SECRET_KEYS, previousOutputs);
}

function dependsOn(run: ProgramRun, dependent: string, dependency: string): boolean {
  return run.byName(dependent).dependencies.includes(run.byName(dependency).urn);
}

function inputDiff(a: Registration, b: Registration): string[] {
  const keys = new Set([...Object.keys(a.inputs), ...Object.keys(b.inputs)]);
  return [...keys].filter((k) => JSON.stringify(a.inputs[k]) !== JSON.stringify(b.inputs[k])).sort();
}

describe("binary mode", () => {
  test("creates the component tree with the expected types and names", async () => {
    const r = await run(binaryConfig());
    expect(r.registrations.map((x) => `${x.type} ${x.name}`).sort()).toEqual(
      [
        "progressdb:index:ProgressDb progressdb",
        "progressdb:deploy:Preflight progressdb-preflight",
        "command:remote:Command progressdb-preflight-check",
        "progressdb:backup:Backup progressdb-backup",
        "command:remote:Command progressdb-backup-upload",
        "progressdb:deploy:BinaryDeployment progressdb-deploy",
        "command:remote:Command progressdb-deploy-install",
        "pulumi-nodejs:dynamic/health:HealthCheck progressdb-health",
      ].sort(),
    );
    for (const child of ["progressdb-preflight", "progressdb-backup", "progressdb-deploy", "progressdb-health"]) {
      expect(r.byName(child).parent).toBe(r.byName("progressdb").urn);
    }
  });

  test("orders preflight → backup → install → health check", async () => {
    const r = await run(binaryConfig());
    expect(dependsOn(r, "progressdb-backup-upload", "progressdb-preflight-check")).toBe(true);
    expect(dependsOn(r, "progressdb-deploy-install", "progressdb-backup-upload")).toBe(true);
    expect(dependsOn(r, "progressdb-health", "progressdb-deploy-install")).toBe(true);
    expect(dependsOn(r, "progressdb-preflight-check", "progressdb-backup-upload")).toBe(false);
  });

  test("host commands are triggered by the version only; a restore by its request only", async () => {
    const r = await run({ ...binaryConfig("0.1.2"), restore: { backup: "before:0.2.0" } });
    for (const name of ["progressdb-preflight-check", "progressdb-backup-upload"]) {
      expect(r.byName(name).inputs.triggers).toEqual(["0.1.2"]);
    }
    // The install also re-runs whenever the backup (which stops the service) ran again.
    expect(r.byName("progressdb-deploy-install").inputs.triggers).toEqual(["0.1.2", "progressdb-backup-upload-id"]);
    expect(r.byName("progressdb-restore-data").inputs.triggers).toEqual(["before:0.2.0"]);
  });

  test("a restore runs after the backup and before the install, and re-arms the health check", async () => {
    const r = await run({ ...binaryConfig("0.1.2"), restore: { backup: "before:0.2.0" } }, { version: "0.2.0" });
    expect(r.byName("progressdb-restore").type).toBe("progressdb:backup:Restore");
    expect(dependsOn(r, "progressdb-restore-data", "progressdb-backup-upload")).toBe(true);
    expect(dependsOn(r, "progressdb-deploy-install", "progressdb-restore-data")).toBe(true);
    expect(r.byName("progressdb-health").inputs.deploymentId).toBe("progressdb-deploy-install-id+progressdb-restore-data-id");
    const plain = await run(binaryConfig("0.1.2"));
    expect(plain.registrations.some((x) => x.name.startsWith("progressdb-restore"))).toBe(false);
  });

  test("changing only progressdb:version re-triggers backup, deployment and health check, and nothing else", async () => {
    const before = await run(binaryConfig("0.1.2"));
    const after = await run(binaryConfig("0.2.0"));
    expect(after.registrations.map((x) => x.name)).toEqual(before.registrations.map((x) => x.name));
    const changed: Record<string, string[]> = {};
    for (const a of before.registrations) {
      const diff = inputDiff(a, after.byName(a.name));
      if (diff.length > 0) changed[a.name] = diff;
    }
    expect(changed).toEqual({
      "progressdb-preflight-check": ["create", "triggers"],
      "progressdb-backup-upload": ["create", "triggers"],
      "progressdb-deploy-install": ["create", "triggers"],
      "progressdb-health": ["expectedVersion"],
    });
  });

  test("exports the version, previous version, backup and health", async () => {
    const r = await run(binaryConfig("0.2.0"));
    expect(r.outputs).toMatchObject({
      version: "0.2.0",
      previousVersion: "0.1.2",
      backupUri: expect.stringMatching(/^s3:\/\/backups\/.*-0\.1\.2-to-0\.2\.0\.tar\.gz$/),
      backupSha256: "b".repeat(64),
      backupSize: 1234,
      healthStatus: "healthy",
    });
  });

  test("secrets reach the engine only as secrets", async () => {
    const r = await run(binaryConfig());
    for (const cmd of r.registrations.filter((x) => x.type === "command:remote:Command")) {
      const wire = cmd.wire as { connection: unknown; stdin: unknown };
      expect(JSON.stringify(wire.connection), cmd.name).toContain(SECRET_SIG);
      expect(cmd.inputs.connection, cmd.name).toMatchObject({ privateKey: TEST_SECRETS.sshPrivateKey, perDialTimeout: 10, dialErrorLimit: 3 });
      expect(JSON.stringify(wire.stdin)).toContain(SECRET_SIG);
      expect(cmd.additionalSecretOutputs).toContain("stdin");
      expect(cmd.inputs.logging).toBe("stderr");
      expect(String(cmd.inputs.create)).not.toMatch(/TEST SSH KEY|test-s3-secret|9{64}|TESTACCESSKEY/);
    }
    // Every occurrence of a secret value on the wire sits inside a secret marker.
    for (const reg of r.registrations) {
      const stripped = JSON.stringify(reg.wire, (_k, v) => (v && typeof v === "object" && JSON.stringify(v).includes(SECRET_SIG) && "value" in v ? "<secret>" : v));
      for (const s of Object.values(TEST_SECRETS)) expect(stripped, reg.name).not.toContain(s);
    }
  });

  test("the backup-bucket component appears only with createBucket, protected", async () => {
    const withBucket = await run({ ...binaryConfig(), backup: { bucket: "backups", endpoint: "http://127.0.0.1:19000", createBucket: true, retentionDays: 14 } });
    const bucket = withBucket.byName("progressdb-bucket-bucket");
    expect(bucket.type).toBe("aws:s3/bucket:Bucket");
    expect(bucket.protect).toBe(true);
    expect(withBucket.byName("progressdb-bucket-expiry").inputs.rules).toEqual([expect.objectContaining({ expiration: { days: 14 } })]);
    expect(withBucket.byName("progressdb-bucket-public-access").inputs).toMatchObject({ blockPublicAcls: true, restrictPublicBuckets: true });
    expect(dependsOn(withBucket, "progressdb-preflight-check", "progressdb-bucket-bucket")).toBe(true);
    const without = await run(binaryConfig());
    expect(without.registrations.some((x) => x.type.startsWith("aws:"))).toBe(false);
  });

  test("with backups disabled, the install follows the preflight directly", async () => {
    const r = await run({ ...binaryConfig(), backup: { enabled: false } });
    expect(r.registrations.some((x) => x.name === "progressdb-backup")).toBe(false);
    expect(dependsOn(r, "progressdb-deploy-install", "progressdb-preflight-check")).toBe(true);
  });

  test("bad config fails before any resource is registered", async () => {
    await expect(run({ ...binaryConfig(), version: "latest" })).rejects.toThrow(/progressdb:version "latest" is not allowed/);
  });
});

describe("downgrade guard", () => {
  test("a version lower than the deployed one fails before any resource registers", async () => {
    const failure = await run(binaryConfig("0.1.2"), { version: "0.2.0" }).then(
      () => undefined,
      (e: Error & { registrations: Registration[] }) => e,
    );
    expect(failure?.message).toMatch(
      /progressdb:version 0\.1\.2 is lower than the deployed 0\.2\.0[\s\S]*progressdb:restore\.backup before:0\.2\.0[\s\S]*progressdb:allowDowngrade true/,
    );
    expect(failure?.registrations).toEqual([]);
  });

  test("an upgrade, a restore request or the explicit override passes", async () => {
    await expect(run(binaryConfig("0.2.1"), { version: "0.2.0" })).resolves.toBeDefined();
    await expect(run({ ...binaryConfig("0.1.2"), allowDowngrade: true }, { version: "0.2.0" })).resolves.toBeDefined();
    await expect(run({ ...binaryConfig("0.1.2"), restore: { backup: "before:0.2.0" } }, { version: "0.2.0" })).resolves.toBeDefined();
  });
});

describe("container mode", () => {
  test("pulls the image before the backup, replaces the container after it, then checks health", async () => {
    const r = await run(containerConfig("0.2.0"));
    expect(r.byName("progressdb-image-pull").type).toBe("docker:index/remoteImage:RemoteImage");
    expect(r.byName("progressdb-image-pull").inputs).toMatchObject({ name: "docker.io/progressdb/progressdb:0.2.0", keepLocally: true });
    const container = r.byName("progressdb-deploy-container");
    expect(container.type).toBe("docker:index/container:Container");
    expect(container.deleteBeforeReplace).toBe(true);
    expect(container.inputs).toMatchObject({ name: "progressdb", volumes: [{ hostPath: "/srv/progressdb/data", containerPath: "/data" }] });
    expect(dependsOn(r, "progressdb-backup-upload", "progressdb-image-pull")).toBe(true);
    expect(dependsOn(r, "progressdb-deploy-container", "progressdb-backup-upload")).toBe(true);
    expect(dependsOn(r, "progressdb-health", "progressdb-deploy-container")).toBe(true);
  });

  test("only a version change changes the image and the container", async () => {
    const before = await run(containerConfig("0.1.2"));
    const after = await run(containerConfig("0.2.0"));
    const changed = before.registrations.filter((a) => inputDiff(a, after.byName(a.name)).length > 0).map((a) => a.name).sort();
    expect(changed).toEqual(["progressdb-backup-upload", "progressdb-deploy-container", "progressdb-health", "progressdb-image-pull"].sort());
  });

  test("the KMS master key reaches the container env only as a secret", async () => {
    const r = await run(containerConfig());
    const envs = JSON.stringify(r.byName("progressdb-deploy-container").wire.envs);
    expect(envs).toContain(SECRET_SIG);
    expect(JSON.stringify(r.byName("progressdb-deploy-container").inputs.envs)).toContain(`PROGRESSDB_KMS_MASTER_KEY_HEX=${TEST_SECRETS.kmsMasterKeyHex}`);
  });
});
