// The real engine end to end: the local stack deployed over real SSH to the
// ProgressDB stand-in, backups to MinIO, upgraded and rolled back by editing
// progressdb:version in the stack file and running the real `pulumi` CLI.
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { PulumiStack, REPO } from "../../scripts/lib/pulumiCli";
import { writeLocalStack } from "../../scripts/lib/localStack";
import { freePort } from "../fixtures/net";
import { TestHost, World, downloadObject, readMessages, readyz, startWorld, writeSampleData } from "../integration/world";

const PULUMI = path.join(REPO, ".tools", "bin", "pulumi");


describe("pulumi up on the local stack (real engine)", () => {
  let world: World;
  let stack: PulumiStack;
  let host: TestHost;
  let root: string;
  let sample: { threadKey: string; bodies: unknown[] };
  const secrets = {
    kmsMasterKeyHex: randomBytes(32).toString("hex"),
    passphrase: randomBytes(12).toString("hex"),
  };
  const log: string[] = [];
  let state = "";

  beforeAll(async () => {
    if (!existsSync(PULUMI)) throw new Error(`${PULUMI} is missing: run scripts/setup.sh (npm test does) to build the toolchain`);
    world = await startWorld();
    root = mkdtempSync(path.join(os.tmpdir(), "pdb-e2e-"));
    const servicePort = await freePort();
    host = {
      params: {
        installDir: path.join(root, "host", "opt"),
        dbPath: path.join(root, "host", "data"),
        serviceManager: "process",
        serviceName: "progressdb",
        listenAddr: `127.0.0.1:${servicePort}`,
      },
      port: servicePort,
      url: `http://127.0.0.1:${servicePort}`,
      kmsKeyHex: secrets.kmsMasterKeyHex,
    };
    stack = new PulumiStack({ workDir: path.join(root, "pulumi"), stack: "e2e", passphrase: secrets.passphrase, onOutput: (l) => log.push(l) });
    writeLocalStack(
      path.join(root, "Pulumi.e2e.yaml"),
      { sshPort: world.sshd.port, mirrorBaseUrl: world.mirror.baseUrl, s3Endpoint: world.minio.endpoint, bucket: world.minio.bucket, servicePort, root: path.join(root, "host") },
    );
    await stack.init(readFileSync(path.join(root, "Pulumi.e2e.yaml"), "utf8"));
    await stack.set("progressdb:sshPrivateKey", world.sshd.privateKey, { secret: true });
    await stack.set("progressdb:kmsMasterKeyHex", secrets.kmsMasterKeyHex, { secret: true });
    await stack.set("progressdb:s3AccessKeyId", world.minio.accessKeyId, { secret: true });
    await stack.set("progressdb:s3SecretAccessKey", world.minio.secretAccessKey, { secret: true });
  });

  afterAll(async () => {
    // Stop the stand-in the stack started, then the servers.
    const pidFile = path.join(root ?? "/nonexistent", "host", "opt", "run", "progressdb.pid");
    if (existsSync(pidFile)) {
      try {
        process.kill(Number(readFileSync(pidFile, "utf8").trim()), "SIGTERM");
      } catch {
        /* already gone */
      }
    }
    await world?.stop();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  async function backupObjects(): Promise<string[]> {
    const r = await world.minio.aws(["s3api", "list-objects-v2", "--bucket", world.minio.bucket, "--query", "Contents[].Key", "--output", "json"]);
    return (JSON.parse(r.stdout || "null") as string[] | null) ?? [];
  }

  test("up at 0.1.2 creates preflight, backup, deploy and health resources; the stand-in answers 0.1.2", async () => {
    const up = await stack.up();
    expect(up.code).toBe(0);
    const outputs = await stack.outputs();
    expect(outputs, JSON.stringify(outputs)).toMatchObject({ version: "0.1.2", previousVersion: "", healthStatus: "healthy" });
    const state = JSON.parse(await stack.exportState()) as { deployment: { resources: Array<{ type: string; urn: string }> } };
    const types = state.deployment.resources.map((r) => r.type);
    for (const t of ["progressdb:deploy:Preflight", "progressdb:backup:Backup", "progressdb:deploy:BinaryDeployment", "pulumi-nodejs:dynamic/health:HealthCheck", "command:remote:Command"]) {
      expect(types).toContain(t);
    }
    expect((await readyz(host)).body).toEqual({ status: "ok", version: "0.1.2" });
    sample = await writeSampleData(host, 3);
  });

  test("preview after setting version 0.2.0 lists exactly the resources the version change replaces", async () => {
    stack.setVersionLine("0.2.0");
    const preview = await stack.preview(["--json"]);
    const steps = (JSON.parse(preview.stdout) as { steps: Array<{ op: string; urn: string }> }).steps;
    // "read" is the stack reading its own last outputs (the downgrade guard), not a change.
    const changed = steps.filter((s) => s.op !== "same" && s.op !== "read").map((s) => `${s.op} ${s.urn.split("::").pop()}`).sort();
    expect(changed, JSON.stringify(changed)).toEqual(
      [
        "replace progressdb-backup-upload",
        "replace progressdb-deploy-install",
        "replace progressdb-health",
        "replace progressdb-preflight-check",
      ].sort(),
    );
  });

  test("up at 0.2.0 backs up to MinIO with a verified sha256, and the stand-in answers 0.2.0 with the data intact", async () => {
    const before = await backupObjects();
    await stack.up();
    const outputs = await stack.outputs();
    expect(outputs, JSON.stringify(outputs)).toMatchObject({ version: "0.2.0", previousVersion: "0.1.2", healthStatus: "healthy" });
    expect(outputs.backupUri).toMatch(new RegExp(`^s3://${world.minio.bucket}/progressdb-backups/e2e/\\d{8}T\\d{6}Z-0\\.1\\.2-to-0\\.2\\.0\\.tar\\.gz$`));
    const key = outputs.backupUri.replace(`s3://${world.minio.bucket}/`, "");
    expect((await backupObjects()).filter((k) => !before.includes(k)).sort()).toEqual([key, `${key}.sha256`].sort());
    const local = path.join(root, "backup.tar.gz");
    await downloadObject(world, key, local);
    expect(createHash("sha256").update(readFileSync(local)).digest("hex")).toBe(outputs.backupSha256);
    expect(readFileSync(local).length).toBe(outputs.backupSize);
    expect((await readyz(host)).body).toEqual({ status: "ok", version: "0.2.0" });
    expect(await readMessages(host, sample.threadKey)).toEqual(sample.bodies);
  });

  test("a second up with no change does nothing: no backup, no restart", async () => {
    const pidFile = path.join(host.params.installDir, "run", "progressdb.pid");
    const pid = readFileSync(pidFile, "utf8").trim();
    const objects = await backupObjects();
    const up = await stack.up(["--expect-no-changes"]);
    expect(up.code).toBe(0);
    expect(readFileSync(pidFile, "utf8").trim()).toBe(pid);
    expect(await backupObjects()).toEqual(objects);
  });

  test("reverting to 0.1.2 after the 0.2.0 migration is stopped by the downgrade guard at preview", async () => {
    stack.setVersionLine("0.1.2");
    const preview = await stack.preview([], { allowFailure: true });
    expect(preview.code).not.toBe(0);
    expect(preview.stdout + preview.stderr).toMatch(/0\.1\.2 is lower than the deployed 0\.2\.0/);
    expect(preview.stdout + preview.stderr).toMatch(/progressdb:restore\.backup/);
    expect(preview.stdout + preview.stderr).toMatch(/progressdb:allowDowngrade/);
    expect((await readyz(host)).body).toEqual({ status: "ok", version: "0.2.0" });
  });

  test("the rollback past the migration is a restore: 0.1.2 runs on the pre-upgrade backup, data intact", async () => {
    const upgraded = await stack.outputs();
    await stack.set("progressdb:restore.backup", "before:0.2.0", { path: true });
    const up = await stack.up();
    expect(up.code).toBe(0);
    expect((await readyz(host)).body).toEqual({ status: "ok", version: "0.1.2" });
    expect(await readMessages(host, sample.threadKey)).toEqual(sample.bodies);
    const outputs = await stack.outputs();
    expect(outputs).toMatchObject({ version: "0.1.2", previousVersion: "0.2.0" });
    // The migrated 0.2.0 data was backed up first, and is also kept aside on the host.
    expect(outputs.backupUri).toMatch(/-0\.2\.0-to-0\.1\.2\.tar\.gz$/);
    expect(outputs.backupUri).not.toBe(upgraded.backupUri);
    const parent = path.dirname(host.params.dbPath);
    expect(readdirSync(parent).filter((n) => n.startsWith("data.before-restore-"))).toHaveLength(1);
  });

  test("the same restore value again does nothing; clearing it runs nothing on the host", async () => {
    const pidFile = path.join(host.params.installDir, "run", "progressdb.pid");
    const pid = readFileSync(pidFile, "utf8").trim();
    expect((await stack.up(["--expect-no-changes"])).code).toBe(0);
    await stack.run(["config", "rm", "--path", "progressdb:restore.backup"]);
    const cleared = await stack.up();
    expect(cleared.code).toBe(0);
    expect(readFileSync(pidFile, "utf8").trim()).toBe(pid);
    expect(await readMessages(host, sample.threadKey)).toEqual(sample.bodies);
  });

  test("stack history shows each update with its version", async () => {
    expect(await stack.updates()).toEqual([
      ["succeeded", "0.1.2"],
      ["succeeded", "0.2.0"],
      ["succeeded", "0.2.0"],
      ["succeeded", "0.1.2"],
      ["succeeded", "0.1.2"],
      ["succeeded", "0.1.2"],
    ]);
  });

  test("pulumi destroy forgets the stack's resources but stops nothing and deletes no data or backup", async () => {
    const pidFile = path.join(host.params.installDir, "run", "progressdb.pid");
    const pid = readFileSync(pidFile, "utf8").trim();
    const objects = await backupObjects();
    const exportedBefore = await stack.exportState();
    expect((await stack.run(["destroy", "--yes", "--skip-preview"])).code).toBe(0);
    expect(readFileSync(pidFile, "utf8").trim()).toBe(pid);
    expect((await readyz(host)).body).toEqual({ status: "ok", version: "0.1.2" });
    expect(await readMessages(host, sample.threadKey)).toEqual(sample.bodies);
    expect(await backupObjects()).toEqual(objects);
    state = exportedBefore;
  });

  test("no secret appears in the state export or in anything the CLI printed", async () => {
    const exported = state + (await stack.exportState());
    const printed = log.join("\n");
    for (const secret of [world.sshd.privateKey.split("\n")[1], secrets.kmsMasterKeyHex, world.minio.secretAccessKey]) {
      expect(exported).not.toContain(secret);
      expect(printed).not.toContain(secret);
    }
  });
});
