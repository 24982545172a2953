// Container mode end to end, for real: the real `pulumi` CLI drives the
// program in container mode against podman's Docker-compatible API socket,
// with images built here from the ProgressDB stand-in, the Backup over real
// SSH to this machine (the "docker host") into MinIO, and the HealthCheck
// against the container's published port. Upgrade (data intact on the bind
// mount), a broken version that fails the HealthCheck, and the rollback by
// reverting the version line.
//
// The command and docker resource providers are the stand-ins in
// tools/providers (the real ones are not served by the Go module proxy
// reachable here), built and installed by scripts/tools.sh.
import { randomBytes, createHash } from "node:crypto";
import { chownSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test, type TestContext } from "vitest";
import { PulumiStack, REPO, toolsEnv } from "../../scripts/lib/pulumiCli";
import { freePort, run } from "../fixtures/net";
import { BACKEND_KEY, integrationUnavailable, downloadObject, readMessages, readyz, startWorld, writeSampleData, type TestHost, type World } from "../integration/world";
import { IMAGE, podmanUnavailable, probeRun, startPodman, type Podman } from "./podman";

const PULUMI = path.join(REPO, ".tools", "bin", "pulumi");
/** One `pulumi up` here is ~20-60 s; a failing one waits out the HealthCheck timeout. */
const TEST_TIMEOUT = 300_000;
/** What the HealthCheck reports when the new version answered (the wording is the HealthCheck's). */
const HEALTHY = ["ok", "healthy"];

/** The stand-in provider plugin `name` that scripts/tools.sh installs into the CLI driver's PULUMI_HOME. */
function plugin(name: "command" | "docker"): string | undefined {
  const plugins = path.join(toolsEnv().PULUMI_HOME!, "plugins");
  if (!existsSync(plugins)) return undefined;
  const dir = readdirSync(plugins).find((d) => new RegExp(`^resource-${name}-v[0-9.]+$`).test(d) && existsSync(path.join(plugins, d, `pulumi-resource-${name}`)));
  return dir ? path.join(plugins, dir, `pulumi-resource-${name}`) : undefined;
}

function why(): string | undefined {
  if (!existsSync(PULUMI)) return `${PULUMI} is missing (run scripts/tools.sh)`;
  for (const name of ["command", "docker"] as const) {
    if (!plugin(name)) return `the ${name} provider is not installed in ${toolsEnv().PULUMI_HOME}/plugins (run scripts/tools.sh)`;
  }
  return podmanUnavailable() ?? integrationUnavailable();
}

const unavailable = why();
if (unavailable) console.warn(`\n\n*** SKIPPING tests/container/container.e2e.test.ts: ${unavailable} ***\n`);

function lastLines(text: string, n: number): string {
  return text.trim().split("\n").slice(-n).join("\n");
}


interface StateResource {
  type: string;
  urn: string;
  id?: string;
  inputs?: Record<string, unknown>;
  outputs?: Record<string, unknown>;
}

describe.skipIf(!!unavailable)("container mode against podman's Docker API (real engine)", () => {
  let world: World;
  let podman: Podman;
  let stack: PulumiStack;
  let root: string;
  let host: TestHost;
  let dataDir: string;
  let sample: { threadKey: string; bodies: unknown[] };
  let runtimeError: string | undefined;
  const name = `progressdb-e2e-${randomBytes(3).toString("hex")}`;
  const secrets = { kmsMasterKeyHex: randomBytes(32).toString("hex"), passphrase: randomBytes(12).toString("hex") };
  const log: string[] = [];

  beforeAll(async () => {
    root = mkdirTemp();
    world = await startWorld({ versions: [] });
    try {
      podman = await startPodman();
      await Promise.all(["0.1.2", "0.2.0", { version: "0.2.1", fault: "exit-at-start" as const }].map((v) => podman.buildImage(v)));
      runtimeError = await probeRun(podman, `${IMAGE}:0.2.0`);
    } catch (e) {
      runtimeError = (e as Error).message;
    }
    if (runtimeError) {
      console.warn(`\n\n*** SKIPPING tests/container/container.e2e.test.ts: podman is installed but cannot run a container here:\n${runtimeError}\n***\n`);
      return;
    }

    const port = await freePort();
    host = {
      params: { installDir: path.join(root, "host", "opt"), dbPath: path.join(root, "host", "data"), serviceManager: "process", serviceName: name, listenAddr: `127.0.0.1:${port}` },
      port,
      url: `http://127.0.0.1:${port}`,
      kmsKeyHex: secrets.kmsMasterKeyHex,
    };
    // The image runs as uid 1000 (as the real one): the bind-mounted data dir must be its.
    dataDir = host.params.dbPath;
    mkdirSync(dataDir, { recursive: true });
    chownSync(dataDir, 1000, 1000);

    stack = new PulumiStack({ workDir: path.join(root, "pulumi"), stack: "container", passphrase: secrets.passphrase, onOutput: (l) => log.push(l) });
    await stack.init(stackFile("0.1.2"));
    await stack.set("progressdb:sshPrivateKey", world.sshd.privateKey, { secret: true });
    await stack.set("progressdb:kmsMasterKeyHex", secrets.kmsMasterKeyHex, { secret: true });
    await stack.set("progressdb:s3AccessKeyId", world.minio.accessKeyId, { secret: true });
    await stack.set("progressdb:s3SecretAccessKey", world.minio.secretAccessKey, { secret: true });
    // Pulumi.yaml declares apiKey `secret: true` with a plaintext default, which this CLI
    // rejects ("must be encrypted as it's secret") unless the stack sets it.
    await stack.set("progressdb:apiKey", BACKEND_KEY, { secret: true });
  }, 900_000);

  afterAll(async () => {
    await podman?.stop();
    await world?.stop();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  function mkdirTemp(): string {
    const d = path.join(os.tmpdir(), `pdb-container-e2e-${randomBytes(4).toString("hex")}`);
    mkdirSync(d, { recursive: true });
    return d;
  }

  function stackFile(version: string): string {
    return `config:
  progressdb:version: "${version}"
  progressdb:deployment:
    mode: container
    host:
      address: 127.0.0.1
      port: ${world.sshd.port}
      user: ${world.sshd.user}
    binary:
      installDir: ${host.params.installDir}
    container:
      image: ${IMAGE}
      dockerHost: ${podman.dockerHost}
      name: ${name}
      ports:
        - internal: 8080
          external: ${host.port}
      env:
        PROGRESSDB_STANDIN_OPEN_DELAY_MS: "200"
      restart: "no"
  progressdb:storage:
    dbPath: ${dataDir}
  progressdb:kms:
    mode: embedded
  progressdb:backup:
    bucket: ${world.minio.bucket}
    endpoint: ${world.minio.endpoint}
    region: ${world.minio.region}
  progressdb:health:
    url: ${host.url}
    timeoutSeconds: 20
    intervalSeconds: 1
`;
  }

  /** "<op> <name>" for each step the engine started, in order, from an `--event-log` file. */
  function stepOrder(eventLog: string): string[] {
    return readFileSync(eventLog, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { resourcePreEvent?: { metadata: { op: string; urn: string } } })
      .filter((e) => e.resourcePreEvent && e.resourcePreEvent.metadata.op !== "same")
      .map((e) => `${e.resourcePreEvent!.metadata.op} ${e.resourcePreEvent!.metadata.urn.split("::").pop()}`);
  }

  async function state(): Promise<StateResource[]> {
    return (JSON.parse(await stack.exportState()) as { deployment: { resources: StateResource[] } }).deployment.resources;
  }

  async function inspect(): Promise<{ Id: string; State: { Running: boolean }; Config: { Labels: Record<string, string>; Env: string[] } } | undefined> {
    const r = await podman.cli(["container", "inspect", name]);
    if (r.code !== 0) return undefined;
    return (JSON.parse(r.stdout) as never[])[0];
  }

  async function backupObjects(): Promise<string[]> {
    const r = await world.minio.aws(["s3api", "list-objects-v2", "--bucket", world.minio.bucket, "--query", "Contents[].Key", "--output", "json"]);
    return (JSON.parse(r.stdout || "null") as string[] | null) ?? [];
  }

  /** Skips (loudly, in the report) when podman is installed but cannot run a container here. */
  const live = (ctx: TestContext) => {
    if (runtimeError) ctx.skip(`podman cannot run a container here: ${runtimeError}`);
  };

  test("up at 0.1.2: the image is taken from the host, the container runs with the bind mount, ports, env and labels", async (ctx) => {
    live(ctx);
    const up = await stack.up();
    expect(up.code).toBe(0);
    const outputs = await stack.outputs();
    expect(outputs.version).toBe("0.1.2");
    expect(HEALTHY).toContain(outputs.healthStatus);
    expect((await readyz(host)).body).toEqual({ status: "ok", version: "0.1.2" });

    const resources = await state();
    const image = resources.find((r) => r.type === "docker:index/remoteImage:RemoteImage")!;
    expect(image.inputs).toMatchObject({ name: `${IMAGE}:0.1.2`, keepLocally: true });
    const container = resources.find((r) => r.type === "docker:index/container:Container")!;
    expect(container.id).toBe((await inspect())!.Id);
    const c = (await inspect())!;
    expect(c.State.Running).toBe(true);
    expect(c.Config.Labels).toMatchObject({ "progressdb.version": "0.1.2", "progressdb.image": `${IMAGE}:0.1.2` });
    expect(c.Config.Env).toContain(`PROGRESSDB_KMS_MASTER_KEY_HEX=${secrets.kmsMasterKeyHex}`);
    // The master key reaches the container env but never the state in plaintext.
    expect(await stack.exportState()).not.toContain(secrets.kmsMasterKeyHex);
    const deploy = resources.find((r) => r.type === "progressdb:deploy:ContainerDeployment")!;
    expect(deploy.outputs).toMatchObject({ imageRef: `${IMAGE}:0.1.2`, containerName: name });
    expect(String(deploy.outputs?.imageId)).toMatch(/^(sha256:)?[0-9a-f]{64}$/);
    // The data lives on the host, in the bind mount.
    expect(existsSync(path.join(dataDir, "progressdb"))).toBe(true);
    sample = await writeSampleData(host, 3);
  }, TEST_TIMEOUT);

  test("up at 0.2.0: image first, then the backup to MinIO, then the container replaced; data intact on the bind mount", async (ctx) => {
    live(ctx);
    const before = await backupObjects();
    const oldId = (await inspect())!.Id;
    stack.setVersionLine("0.2.0");
    const preview = await stack.preview(["--json"]);
    const steps = (JSON.parse(preview.stdout) as { steps: Array<{ op: string; urn: string }> }).steps;
    const changed = steps.filter((s) => s.op !== "same").map((s) => `${s.op} ${s.urn.split("::").pop()}`);
    expect(changed).toEqual(expect.arrayContaining(["replace progressdb-image-pull", "replace progressdb-backup-upload", "replace progressdb-deploy-container"]));

    const eventLog = path.join(root, "up-0.2.0.events.jsonl");
    const up = await stack.up(["--json"]);
    writeFileSync(eventLog, up.stdout);
    // Order of the steps: the new image before anything stops; the old container deleted
    // before its replacement is created (fixed name); the replaced image kept (keepLocally).
    const order = stepOrder(eventLog);
    console.log(`steps of the upgrade, in order:\n  ${order.join("\n  ")}`);
    const at = (s: string) => order.indexOf(s);
    expect(at("create-replacement progressdb-image-pull")).toBeGreaterThanOrEqual(0);
    expect(at("create-replacement progressdb-image-pull")).toBeLessThan(at("create-replacement progressdb-backup-upload"));
    expect(at("create-replacement progressdb-backup-upload")).toBeLessThan(at("delete-replaced progressdb-deploy-container"));
    expect(at("delete-replaced progressdb-deploy-container")).toBeLessThan(at("create-replacement progressdb-deploy-container"));
    const outputs = await stack.outputs();
    expect(outputs.version).toBe("0.2.0");
    expect(HEALTHY).toContain(outputs.healthStatus);
    // The Backup stopped the container (docker stop over SSH) and read its version label.
    expect(outputs.previousVersion).toBe("0.1.2");
    expect(outputs.backupUri).toMatch(/-0\.1\.2-to-0\.2\.0\.tar\.gz$/);
    expect(up.stdout).toMatch(new RegExp(`stopping ${name} \\(0\\.1\\.2\\) for a consistent backup`));
    expect(outputs.backupUri).toMatch(new RegExp(`^s3://${world.minio.bucket}/progressdb-backups/container/\\d{8}T\\d{6}Z-.+-to-0\\.2\\.0\\.tar\\.gz$`));
    const key = outputs.backupUri.replace(`s3://${world.minio.bucket}/`, "");
    expect((await backupObjects()).filter((k) => !before.includes(k)).sort()).toEqual([key, `${key}.sha256`].sort());
    const local = path.join(root, "backup.tar.gz");
    await downloadObject(world, key, local);
    expect(createHash("sha256").update(readFileSync(local)).digest("hex")).toBe(outputs.backupSha256);
    const listing = await run("tar", ["-tzf", local]);
    expect(listing.stdout).toContain(`${dataDir.replace(/^\//, "")}/progressdb/`);

    const c = (await inspect())!;
    expect(c.Id).not.toBe(oldId);
    expect(c.Config.Labels["progressdb.version"]).toBe("0.2.0");
    expect((await readyz(host)).body).toEqual({ status: "ok", version: "0.2.0" });
    expect(await readMessages(host, sample.threadKey)).toEqual(sample.bodies);
    // keepLocally: the previous image is still on the host.
    expect(await podman.localTags()).toEqual(expect.arrayContaining([`${IMAGE}:0.1.2`, `${IMAGE}:0.2.0`]));
    const deploy = (await state()).find((r) => r.type === "progressdb:deploy:ContainerDeployment")!;
    expect(deploy.outputs).toMatchObject({ imageRef: `${IMAGE}:0.2.0` });
    expect(outputs).toMatchObject({ imageRef: `${IMAGE}:0.2.0`, previousImageRef: `${IMAGE}:0.1.2` });
  }, TEST_TIMEOUT);

  test("a second up with no change does nothing: same container, no backup", async (ctx) => {
    live(ctx);
    const id = (await inspect())!.Id;
    const objects = await backupObjects();
    const up = await stack.up(["--expect-no-changes"]);
    expect(up.code).toBe(0);
    expect((await inspect())!.Id).toBe(id);
    expect(await backupObjects()).toEqual(objects);
  }, TEST_TIMEOUT);

  test("a version whose image cannot be pulled fails before anything stops: no backup, the running container untouched", async (ctx) => {
    live(ctx);
    const before = (await inspect())!;
    const objects = await backupObjects();
    stack.setVersionLine("0.3.0"); // no such image on the host, and no registry reachable
    const failed = await stack.up([], { allowFailure: true });
    expect(failed.code).not.toBe(0);
    console.log(`the failed up (0.3.0) ends with:\n${lastLines(failed.stdout + failed.stderr, 6)}`);
    expect(failed.stdout + failed.stderr).toMatch(/pulling docker\.io\/progressdb\/progressdb:0\.3\.0/);
    const after = (await inspect())!;
    expect(after.Id).toBe(before.Id);
    expect(after.State.Running).toBe(true);
    expect((await readyz(host)).body).toEqual({ status: "ok", version: "0.2.0" });
    expect(await backupObjects()).toEqual(objects);
  }, TEST_TIMEOUT);

  test("a broken 0.2.1 fails `pulumi up` at the HealthCheck; reverting the line to 0.2.0 restores service from the kept image", async (ctx) => {
    live(ctx);
    stack.setVersionLine("0.2.1");
    const failed = await stack.up([], { allowFailure: true });
    expect(failed.code).not.toBe(0);
    console.log(`the failed up (0.2.1) ends with:\n${lastLines(failed.stdout + failed.stderr, 8)}`);
    expect(failed.stdout + failed.stderr).toMatch(/progressdb-health/);
    // The broken container was created (the engine has it in state); the service is down.
    expect((await inspect())!.Config.Labels["progressdb.version"]).toBe("0.2.1");
    expect((await readyz(host)).status).toBe(0);
    // The image of the last good version is still on the host: no registry needed to go back.
    expect(await podman.localTags()).toContain(`${IMAGE}:0.2.0`);

    // The operator's way back: revert the one line, run up again.
    stack.setVersionLine("0.2.0");
    const preview = await stack.preview([], { allowFailure: true });
    expect(preview.code).toBe(0);
    const up = await stack.up();
    expect(up.code).toBe(0);
    const outputs = await stack.outputs();
    expect(outputs.version).toBe("0.2.0");
    expect(HEALTHY).toContain(outputs.healthStatus);
    expect((await readyz(host)).body).toEqual({ status: "ok", version: "0.2.0" });
    expect(await readMessages(host, sample.threadKey)).toEqual(sample.bodies);
    expect((await inspect())!.Config.Labels["progressdb.version"]).toBe("0.2.0");
  }, TEST_TIMEOUT);

  test("stack history shows each update with its version and result", async (ctx) => {
    live(ctx);
    expect(await stack.updates()).toEqual([
      ["succeeded", "0.1.2"],
      ["succeeded", "0.2.0"],
      ["succeeded", "0.2.0"],
      ["failed", "0.3.0"],
      ["failed", "0.2.1"],
      ["succeeded", "0.2.0"],
    ]);
  }, TEST_TIMEOUT);
});
