// `npm run demo`: the main job on the local stack with the real engine.
// Starts sshd, MinIO and a release mirror of the ProgressDB stand-in (a test
// fixture: no real ProgressDB release can be downloaded here) on loopback,
// deploys 0.1.2, writes data, upgrades to 0.2.0 by editing progressdb:version
// and running `pulumi up`, shows the backup, rolls back, and cleans up.
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { PulumiStack, REPO } from "./lib/pulumiCli";
import { renderLocalStack } from "./lib/localStack";
import { freePort } from "../tests/fixtures/net";
import { TestHost, World, readMessages, readyz, startWorld, writeSampleData } from "../tests/integration/world";

const started = Date.now();
const step = (text: string) => console.log(`\n\x1b[1m▶ ${text}\x1b[0m  (${((Date.now() - started) / 1000).toFixed(1)} s)`);

/** Polls /healthz every 100 ms and records the longest run of failures: the downtime a client saw. */
function watchDowntime(url: string) {
  let stopped = false;
  let downSince: number | undefined;
  const windows: number[] = [];
  const loop = async () => {
    while (!stopped) {
      const ok = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(500) }).then((r) => r.ok, () => false);
      const now = Date.now();
      if (!ok && downSince === undefined) downSince = now;
      if (ok && downSince !== undefined) {
        windows.push(now - downSince);
        downSince = undefined;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const running = loop();
  return {
    async stop(): Promise<number[]> {
      stopped = true;
      await running;
      return windows;
    },
  };
}


async function main(): Promise<void> {
  const workDir = path.join(REPO, ".state", "demo");
  rmSync(workDir, { recursive: true, force: true });
  mkdirSync(workDir, { recursive: true });

  step("Starting sshd, MinIO and the release mirror on 127.0.0.1");
  const world: World = await startWorld({ versions: ["0.1.2", "0.2.0"] });
  const servicePort = await freePort();
  const hostRoot = path.join(workDir, "host");
  const host: TestHost = {
    params: { installDir: path.join(hostRoot, "opt"), dbPath: path.join(hostRoot, "data"), serviceManager: "process", serviceName: "progressdb", listenAddr: `127.0.0.1:${servicePort}` },
    port: servicePort,
    url: `http://127.0.0.1:${servicePort}`,
    kmsKeyHex: randomBytes(32).toString("hex"),
  };
  const stack = new PulumiStack({
    workDir: path.join(workDir, "pulumi"),
    stack: "local",
    passphrase: randomBytes(16).toString("hex"),
    onOutput: (line) => console.log(`  │ ${line}`),
  });
  const summary: string[] = [];
  try {
    step("Creating the local stack (file backend, passphrase secrets) from Pulumi.local.yaml");
    await stack.init(
      renderLocalStack({
        sshPort: world.sshd.port,
        mirrorBaseUrl: world.mirror.baseUrl,
        s3Endpoint: world.minio.endpoint,
        bucket: world.minio.bucket,
        servicePort,
        root: hostRoot,
      }),
    );
    await stack.set("progressdb:sshPrivateKey", world.sshd.privateKey, { secret: true });
    await stack.set("progressdb:kmsMasterKeyHex", host.kmsKeyHex, { secret: true });
    await stack.set("progressdb:s3AccessKeyId", world.minio.accessKeyId, { secret: true });
    await stack.set("progressdb:s3SecretAccessKey", world.minio.secretAccessKey, { secret: true });

    step("pulumi up — deploy 0.1.2");
    await stack.up();
    let out = await stack.outputs();
    summary.push(`deployed ${out.version} (health: ${out.healthStatus})`);
    const sample = await writeSampleData(host, 5);
    console.log(`  wrote 5 messages to thread ${sample.threadKey}`);

    step("Upgrade: progressdb:version 0.1.2 → 0.2.0 in the stack file, then pulumi preview and pulumi up");
    stack.setVersionLine("0.2.0");
    await stack.preview();
    const upgradeWatch = watchDowntime(host.url);
    const upgrade = await stack.up();
    const upgradeDown = await upgradeWatch.stop();
    out = await stack.outputs();
    const intact = JSON.stringify(await readMessages(host, sample.threadKey)) === JSON.stringify(sample.bodies);
    console.log(`  backup: ${out.backupUri}\n          ${out.backupSize} bytes, sha256 ${out.backupSha256}`);
    const listing = await world.minio.aws(["s3", "ls", "--recursive", `s3://${world.minio.bucket}/`]);
    console.log(listing.stdout.replace(/^/gm, "  s3: "));
    summary.push(
      `upgraded ${out.previousVersion} → ${out.version} in ${(upgrade.ms / 1000).toFixed(1)} s; downtime seen by a client polling every 100 ms: ${Math.max(0, ...upgradeDown)} ms; data intact: ${intact}`,
      `backup ${out.backupUri} (${out.backupSize} bytes, sha256 ${out.backupSha256.slice(0, 16)}…)`,
    );
    const upgradeBackup = out.backupUri;

    step("Roll back: revert progressdb:version to 0.1.2 — 0.2.0 migrated the data, so the downgrade guard stops the preview");
    stack.setVersionLine("0.1.2");
    const guarded = await stack.preview([], { allowFailure: true });
    console.log(`  preview exited ${guarded.code}: the guard asks for a restore or an explicit override`);
    summary.push(`plain revert to 0.1.2: refused at preview (exit ${guarded.code}), instance still on ${(await readyz(host)).body.version}`);

    step("Roll back with a restore: progressdb:restore.backup = before:0.2.0, then pulumi up");
    await stack.set("progressdb:restore.backup", "before:0.2.0", { path: true });
    const rollbackWatch = watchDowntime(host.url);
    const rollback = await stack.up();
    const rollbackDown = await rollbackWatch.stop();
    out = await stack.outputs();
    const restoredIntact = JSON.stringify(await readMessages(host, sample.threadKey)) === JSON.stringify(sample.bodies);
    summary.push(
      `rolled back to ${out.version} on the pre-upgrade data (${upgradeBackup.split("/").pop()}) in ${(rollback.ms / 1000).toFixed(1)} s; downtime ${Math.max(0, ...rollbackDown)} ms; data intact: ${restoredIntact}`,
    );

    step("pulumi stack history");
    (await stack.updates()).forEach(([result, version], i) => summary.push(`history ${i + 1}: update ${result} at progressdb:version ${version}`));
  } finally {
    const pidFile = path.join(host.params.installDir, "run", "progressdb.pid");
    if (existsSync(pidFile)) {
      try {
        process.kill(Number(readFileSync(pidFile, "utf8").trim()), "SIGTERM");
      } catch {
        /* already stopped */
      }
    }
    await world.stop();
  }
  step("Summary");
  for (const line of summary) console.log(`  • ${line}`);
  console.log(`  • total time ${((Date.now() - started) / 1000).toFixed(1)} s; servers stopped; state kept in ${path.relative(REPO, workDir)}/`);
}

main().catch((e: unknown) => {
  console.error(`\ndemo failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
