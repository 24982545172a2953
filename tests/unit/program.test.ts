// The resource graph under Pulumi mocks: what is created, in which order, what
// a version change touches, and that secrets stay secret on the wire.
import * as pulumi from "@pulumi/pulumi";
import { describe, expect, test, vi } from "vitest";
import { ProgramRun, Registration, SECRET_SIG, runProgram } from "./programHarness";
import { TEST_HOST_KEY, TEST_SECRETS, binaryConfig, containerConfig } from "./fixtures";

const SECRET_KEYS = Object.keys(TEST_SECRETS);

function run(config: Record<string, unknown>, previousOutputs: Record<string, unknown> = {}): Promise<ProgramRun> {
  return runProgram({ ...config, ...TEST_SECRETS }, SECRET_KEYS, previousOutputs);
}

/** A backup of this stack's ledger, taken for the upgrade to `toVersion`. */
function ledgerEntry(toVersion: string) {
  return { uri: `s3://backups/progressdb-backups/test/20260101T000000Z-0.1.2-to-${toVersion}.tar.gz`, sha256: "c".repeat(64), fromVersion: "0.1.2", toVersion, at: "20260101T000000Z" };
}

function dependsOn(run: ProgramRun, dependent: string, dependency: string): boolean {
  return run.byName(dependent).dependencies.includes(run.byName(dependency).urn);
}


describe("binary mode", () => {
  test("creates the component tree with the expected types and names", async () => {
    const r = await run(binaryConfig("0.2.1"), { version: "0.1.2" });
    expect(r.registrations.map((x) => `${x.type} ${x.name}`).sort()).toEqual(
      [
        "progressdb:index:ProgressDb progressdb",
        "pulumi-nodejs:dynamic/probe:ServiceProbe progressdb-probe",
        "progressdb:deploy:Preflight progressdb-preflight",
        "command:remote:Command progressdb-preflight-check",
        "pulumi-nodejs:dynamic/snapshot:DataSnapshot progressdb-snapshot",
        "progressdb:backup:Backup progressdb-backup",
        "command:remote:Command progressdb-backup-upload",
        "progressdb:backup:Offsite progressdb-offsite",
        "command:remote:Command progressdb-offsite-upload",
        "progressdb:deploy:Migrate progressdb-migrate",
        "command:remote:Command progressdb-migrate-data",
        "progressdb:deploy:BinaryDeployment progressdb-deploy",
        "command:remote:Command progressdb-deploy-install",
        "pulumi-nodejs:dynamic/health:HealthCheck progressdb-health",
        "progressdb:deploy:Finalize progressdb-finalize",
        "command:remote:Command progressdb-finalize-commit",
      ].sort(),
    );
    for (const child of ["progressdb-preflight", "progressdb-snapshot", "progressdb-backup", "progressdb-offsite", "progressdb-migrate", "progressdb-deploy", "progressdb-health", "progressdb-finalize"]) {
      expect(r.byName(child).parent).toBe(r.byName("progressdb").urn);
    }
  });

  test("every host step's run key is the version plus the drift probe's epoch; the probe comes first", async () => {
    const r = await run(binaryConfig("0.2.1"), { version: "0.1.2" });
    expect(r.byName("progressdb-probe").inputs).toMatchObject({ expectedVersion: "0.2.1", versionProofMode: "readyz", url: "http://127.0.0.1:18080" });
    for (const step of ["progressdb-preflight-check", "progressdb-backup-upload", "progressdb-offsite-upload", "progressdb-migrate-data", "progressdb-deploy-install"]) {
      expect((r.byName(step).inputs.triggers as string[])[0], step).toBe("0.2.1.e1");
    }
    expect(dependsOn(r, "progressdb-preflight-check", "progressdb-probe")).toBe(true);
  });

  test("a 0.1.x release has no migration step (its family ships no prgcli)", async () => {
    const r = await run(binaryConfig("0.1.2"));
    expect(r.registrations.some((x) => x.name.startsWith("progressdb-migrate"))).toBe(false);
  });

  test("orders preflight → snapshot → backup → migrate → install → health check → finalize", async () => {
    const r = await run(binaryConfig("0.2.1"), { version: "0.1.2" });
    expect(dependsOn(r, "progressdb-snapshot", "progressdb-preflight-check")).toBe(true);
    expect(dependsOn(r, "progressdb-backup-upload", "progressdb-snapshot")).toBe(true);
    expect(dependsOn(r, "progressdb-migrate-data", "progressdb-backup-upload")).toBe(true);
    expect(dependsOn(r, "progressdb-deploy-install", "progressdb-migrate-data")).toBe(true);
    expect(dependsOn(r, "progressdb-health", "progressdb-deploy-install")).toBe(true);
    expect(dependsOn(r, "progressdb-finalize-commit", "progressdb-health")).toBe(true);
    expect(dependsOn(r, "progressdb-preflight-check", "progressdb-backup-upload")).toBe(false);
  });

  test("the offsite upload depends on the backup alone (it runs beside the migration and the install, and ends when they fail); finalize waits for it", async () => {
    const r = await run(binaryConfig("0.2.1"), { version: "0.1.2" });
    expect(dependsOn(r, "progressdb-offsite-upload", "progressdb-backup-upload")).toBe(true);
    for (const other of ["progressdb-migrate-data", "progressdb-deploy-install", "progressdb-health"]) {
      expect(dependsOn(r, "progressdb-offsite-upload", other), other).toBe(false);
    }
    expect(dependsOn(r, "progressdb-finalize-commit", "progressdb-offsite-upload")).toBe(true);
    expect(String(r.byName("progressdb-offsite-upload").inputs.create)).toContain("# progressdb-upgrades offsite.sh");
  });

  test("binary mode backs up by snapshot (uploaded after the start); offsiteBeforeStart and a restore stream with the service stopped", async () => {
    const mode = (r: Awaited<ReturnType<typeof run>>) => /^PDB_BACKUP_MODE='([^']*)'$/m.exec(String(r.byName("progressdb-backup-upload").inputs.create))?.[1];
    const snapshot = await run(binaryConfig("0.2.1"), { version: "0.1.2" });
    expect(mode(snapshot)).toBe("snapshot");
    expect(String(snapshot.byName("progressdb-preflight-check").inputs.create)).toContain("PDB_BACKUP_MODE='snapshot'");
    const cfg = binaryConfig("0.2.1");
    const before = await run({ ...cfg, backup: { ...(cfg.backup as object), offsiteBeforeStart: true } }, { version: "0.1.2" });
    expect(mode(before)).toBe("stream");
    const restoring = await run({ ...binaryConfig("0.1.2"), restore: { backup: "before:0.1.3" } }, { version: "0.1.3", backupLedger: [ledgerEntry("0.1.3")] });
    expect(mode(restoring)).toBe("stream");
  });

  test("the snapshot reads the deployed version's API; the health check speaks the new one's", async () => {
    const r = await run(binaryConfig("0.2.1"), { version: "0.1.2" });
    expect(r.byName("progressdb-snapshot").inputs).toMatchObject({ dialect: "v1", version: "0.2.1.e1" });
    expect(r.byName("progressdb-health").inputs).toMatchObject({ dialect: "frontend-v1", versionProofMode: "readyz", baselineVersion: "0.1.2" });
    const v01 = await run(binaryConfig("0.1.2"));
    expect(v01.byName("progressdb-health").inputs).toMatchObject({ dialect: "v1", versionProofMode: "host" });
    // The gate follows the install's "switched" (mocked true here: an upgrade); a restart at the same version turns it off.
    expect(r.byName("progressdb-health").inputs.dataContinuity).toBe(true);
  });

  test("the preflight is told the target's data layout and, for 0.2.x, where its prgcli is", async () => {
    const r = await run(binaryConfig("0.2.1"), { version: "0.1.2" });
    const create = String(r.byName("progressdb-preflight-check").inputs.create);
    expect(create).toContain("PDB_TARGET_LAYOUT='store'");
    expect(create).toContain("PDB_TOOL_URL='http://127.0.0.1:18090/0.2.1/prgcli_0.2.1_linux_amd64.tar.gz'");
    const v01 = String((await run(binaryConfig("0.1.2"))).byName("progressdb-preflight-check").inputs.create);
    expect(v01).toContain("PDB_TARGET_LAYOUT='root'");
    expect(v01).toContain("PDB_TOOL_URL=''");
  });

  test("a restore runs after the backup and before the install, and re-arms the health check", async () => {
    const r = await run({ ...binaryConfig("0.1.2"), restore: { backup: "before:0.1.3" } }, { version: "0.1.3", backupLedger: [ledgerEntry("0.1.3")] });
    expect(r.byName("progressdb-restore").type).toBe("progressdb:backup:Restore");
    expect(dependsOn(r, "progressdb-restore-data", "progressdb-backup-upload")).toBe(true);
    expect(dependsOn(r, "progressdb-deploy-install", "progressdb-restore-data")).toBe(true);
    expect(r.byName("progressdb-health").inputs.deploymentId).toBe("progressdb-deploy-install-id+progressdb-restore-data-id");
    expect(r.byName("progressdb-restore-data").inputs.triggers).toEqual(["before:0.1.3"]);
    // A change of its other inputs replays the recorded result: it never restores twice.
    expect(String(r.byName("progressdb-restore-data").inputs.update)).toContain("run/restore-last.json");
    const plain = await run(binaryConfig("0.1.2"));
    expect(plain.registrations.some((x) => x.name.startsWith("progressdb-restore"))).toBe(false);
  });

  test("the service config is rendered per release family and reaches the host only as a secret on stdin", async () => {
    for (const [version, marker] of [["0.1.2", "storage:"], ["0.2.1", "ingest:"]] as const) {
      const r = await run(binaryConfig(version));
      const install = r.byName("progressdb-deploy-install");
      expect(JSON.stringify(install.wire.stdin)).toContain(SECRET_SIG);
      const line = String(install.inputs.stdin).split("\n").find((l) => l.startsWith("PDB_SERVICE_CONFIG_B64="));
      const config = Buffer.from(line!.split("=")[1], "base64").toString("utf8");
      expect(config).toContain(marker);
      expect(config).toContain(TEST_SECRETS.apiKey);
      expect(config).toContain(TEST_SECRETS.kmsMasterKeyHex);
      expect(String(install.inputs.create)).not.toContain(TEST_SECRETS.apiKey);
      expect(String(install.inputs.create)).not.toContain("PROGRESSDB_KMS_MASTER_KEY_HEX");
    }
  });

  test("exports the version, previous version, backup, health, proof, continuity and kept data", async () => {
    const r = await run(binaryConfig("0.2.1"), { version: "0.1.2" });
    expect(r.outputs).toMatchObject({
      version: "0.2.1",
      previousVersion: "0.1.2",
      versionProof: "readyz",
      dataContinuity: "passed",
      keptData: { path: "/srv/progressdb/data.v0.1.2-kept-before-v0.2.1", version: "0.1.2", at: "2026-01-01T00:00:00Z" },
      backupUri: expect.stringMatching(/^s3:\/\/backups\/.*-0\.1\.2-to-0\.2\.1\.tar\.gz$/),
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
      expect(String(cmd.inputs.create)).not.toMatch(/TEST SSH KEY|test-s3-secret|9{64}|TESTACCESSKEY|test-[a-z]+-key-7f3a9c/);
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
    expect(withBucket.byName("progressdb-bucket-expiry").inputs.rules).toEqual(expect.arrayContaining([expect.objectContaining({ expiration: { days: 14 } })]));
    expect(withBucket.byName("progressdb-bucket-public-access").inputs).toMatchObject({ blockPublicAcls: true, restrictPublicBuckets: true });
    expect(dependsOn(withBucket, "progressdb-preflight-check", "progressdb-bucket-bucket")).toBe(true);
    const without = await run(binaryConfig());
    expect(without.registrations.some((x) => x.type.startsWith("aws:"))).toBe(false);
  });

  test("every host step's connection pins the host key; skipping the check is explicit and warned about on every run", async () => {
    const hostSteps = (r: ProgramRun) => r.registrations.filter((x) => x.type === "command:remote:Command");
    const pinned = await run(binaryConfig("0.2.1"), { version: "0.1.2" });
    expect(hostSteps(pinned).length).toBeGreaterThan(0);
    for (const step of hostSteps(pinned)) expect((step.inputs.connection as { hostKey?: string }).hostKey, step.name).toBe(TEST_HOST_KEY);

    const warn = vi.spyOn(pulumi.log, "warn");
    try {
      const base = binaryConfig("0.2.1");
      const host: Record<string, unknown> = { ...(base.deployment as { host: Record<string, unknown> }).host, insecureSkipHostKeyCheck: true };
      delete host.hostKey;
      const insecure = await run({ ...base, deployment: { ...(base.deployment as object), host } }, { version: "0.1.2" });
      for (const step of hostSteps(insecure)) expect(step.inputs.connection).not.toHaveProperty("hostKey");
      expect(warn.mock.calls.map((c) => String(c[0]))).toEqual(
        expect.arrayContaining([expect.stringMatching(/^progressdb:deployment\.host\.insecureSkipHostKeyCheck is true: the SSH host key of 127\.0\.0\.1 is not checked.*ssh-keyscan -p 2222/)]),
      );
    } finally {
      warn.mockRestore();
    }
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
  test("a version lower than the deployed one, in the same family, fails before any resource registers", async () => {
    const failure = await run(binaryConfig("0.2.1"), { version: "0.2.2" }).then(
      () => undefined,
      (e: Error & { registrations: Registration[] }) => e,
    );
    expect(failure?.message).toMatch(
      /progressdb:version 0\.2\.1 is lower than the deployed 0\.2\.2[\s\S]*progressdb:restore\.backup before:0\.2\.2[\s\S]*progressdb:allowDowngrade true/,
    );
    expect(failure?.registrations).toEqual([]);
  });

  test("back across the data format: refused without kept data, allowed (version line only) with it", async () => {
    const refused = await run(binaryConfig("0.1.2"), { version: "0.2.1" }).then(
      () => undefined,
      (e: Error & { registrations: Registration[] }) => e,
    );
    expect(refused?.message).toMatch(/cannot read the data 0\.2\.1 wrote[\s\S]*restore\.backup before:0\.2\.1/);
    expect(refused?.registrations).toEqual([]);
    const kept = { path: "/srv/progressdb/data.v0.1.2-kept-before-v0.2.1", version: "0.1.2", at: "2026-01-01T00:00:00Z" };
    const r = await run(binaryConfig("0.1.2"), { version: "0.2.1", keptData: kept });
    expect(String(r.byName("progressdb-deploy-install").inputs.create)).toContain("PDB_TARGET_LAYOUT='root'");
    // The kept data is used up by the rollback.
    expect(r.outputs.keptData).toEqual({ path: "", version: "", at: "" });
  });

  test("an upgrade, a restore request or the explicit override passes", async () => {
    await expect(run(binaryConfig("0.2.2"), { version: "0.2.1" })).resolves.toBeDefined();
    await expect(run({ ...binaryConfig("0.2.1"), allowDowngrade: true }, { version: "0.2.2" })).resolves.toBeDefined();
    await expect(run({ ...binaryConfig("0.1.2"), restore: { backup: "before:0.2.1" } }, { version: "0.2.1", backupLedger: [ledgerEntry("0.2.1")] })).resolves.toBeDefined();
  });
});

describe("container mode", () => {
  test("preflight and pull before the backup; config written, then the container replaced; then health", async () => {
    const r = await run(containerConfig("0.2.1"), { version: "0.2.1" });
    expect(r.byName("progressdb-image-pull").type).toBe("docker:index/remoteImage:RemoteImage");
    // The real 0.2.x images are tagged v<version> only.
    expect(r.byName("progressdb-image-pull").inputs).toMatchObject({ name: "docker.io/progressdb/progressdb:v0.2.1", keepLocally: true });
    const container = r.byName("progressdb-deploy-container");
    expect(container.type).toBe("docker:index/container:Container");
    expect(container.deleteBeforeReplace).toBe(true);
    expect(container.inputs).toMatchObject({
      name: "progressdb",
      command: ["--config", "/data/config.yaml"],
      volumes: [{ hostPath: "/srv/progressdb/data", containerPath: "/data" }],
    });
    expect(dependsOn(r, "progressdb-image-pull", "progressdb-preflight-check")).toBe(true);
    expect(dependsOn(r, "progressdb-backup-upload", "progressdb-image-pull")).toBe(true);
    expect(dependsOn(r, "progressdb-deploy-config", "progressdb-backup-upload")).toBe(true);
    expect(dependsOn(r, "progressdb-deploy-container", "progressdb-deploy-config")).toBe(true);
    expect(dependsOn(r, "progressdb-health", "progressdb-deploy-container")).toBe(true);
    // The docker provider starts the new container, not a host script: the backup streams, with the container stopped.
    expect(String(r.byName("progressdb-backup-upload").inputs.create)).toContain("PDB_BACKUP_MODE='stream'");
  });

  test("no secret in the container's environment: the config (with the keys) goes to /data on stdin", async () => {
    const r = await run(containerConfig("0.2.1"));
    expect(JSON.stringify(r.byName("progressdb-deploy-container").inputs.envs ?? [])).not.toMatch(/KMS|KEY|7f3a9c|9{64}/);
    const config = r.byName("progressdb-deploy-config");
    expect(JSON.stringify(config.wire.stdin)).toContain(SECRET_SIG);
    const line = String(config.inputs.stdin).split("\n").find((l) => l.startsWith("PDB_SERVICE_CONFIG_B64="));
    const text = Buffer.from(line!.split("=")[1], "base64").toString("utf8");
    expect(text).toContain('db_path: "/data/progressdb"');
    expect(text).toContain('address: "0.0.0.0"');
    expect(text).toContain(TEST_SECRETS.kmsMasterKeyHex);
  });
});
