// Issue #12 on the real engine: `pulumi up` after a change of one config value
// converges, and no update ends with the service stopped. Binary mode, the
// local stack over real SSH to the stand-in's 0.2.1 (which behaves like the
// real one: see tests/contract), backups to MinIO. One case per class of
// change (tests/unit/convergence.test.ts has the whole matrix under mocks):
// each is followed by the service answering the configured version, the data
// reading back (tests/fixtures/progressdbApi.ts), and a second
// `pulumi up --expect-no-changes` exiting 0. Then `pulumi refresh` after the
// service was killed outside Pulumi, and what the next `pulumi up` does.
import { randomBytes } from "node:crypto";
import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { CliResult } from "../../scripts/lib/pulumiCli";
import { madminEncrypt, minioAdmin, minioUnavailable } from "../fixtures/minio";
import { freePort, run, waitFor } from "../fixtures/net";
import { readBodies, readyz, writeThread, type ApiTarget, type WrittenThread } from "../fixtures/progressdbApi";
import { PULUMI, startEngineWorld, type EngineWorld } from "./engineWorld";

function unavailable(): string | undefined {
  if (!existsSync(PULUMI)) return `${PULUMI} is missing: run scripts/setup.sh`;
  for (const f of ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen", "/usr/bin/aws"]) if (!existsSync(f)) return `${f} is missing (scripts/setup.sh installs it)`;
  return minioUnavailable();
}
const skip = unavailable();
if (skip) console.warn(`\n\n*** SKIPPING tests/e2e/convergence.e2e.test.ts: ${skip} ***\n`);

const VERSION = "0.2.1";
const text = (r: CliResult) => r.stdout + r.stderr;
/** What this run printed, without `--diff`'s "- …" lines (the previous outputs, e.g. the last install's stderr). */
const printedNow = (r: CliResult) => text(r).split("\n").filter((l) => !/^\s*- /.test(l)).join("\n");
const tail = (r: CliResult, n = 40) => text(r).trim().split("\n").slice(-n).join("\n");

describe.skipIf(!!skip)("one config value changed, `pulumi up` converges (real engine, binary mode, stand-in 0.2.1)", { timeout: 240_000 }, () => {
  let w: EngineWorld;
  /** Where the service answers now (the listen-address case moves it). */
  let url: string;
  const threads: WrittenThread[] = [];
  const api = (): ApiTarget => ({ ...w.api(VERSION), url });

  beforeAll(async () => {
    w = await startEngineWorld({ stackName: "convergence" });
    url = w.url;
    w.stack.setVersionLine(VERSION);
    const up = await w.stack.up([], { allowFailure: true });
    expect(up.code, tail(up)).toBe(0);
    expect(await w.stack.outputs()).toMatchObject({ version: VERSION, healthStatus: "healthy" });
    threads.push(await writeThread(api(), 2));
  }, 300_000);

  afterAll(async () => {
    await w?.stop();
  });

  interface Expect {
    /** The service was restarted (a new pid), or must not have been (the same pid). */
    restart: boolean;
    /**
     * Known program bug, tolerated only in this exact form (and reported): the drift probe checks
     * the NEW health URL before the restart moved the service there, sees nothing answering, and
     * re-runs the whole chain, so a backup is taken (the service is stopped for it, then the
     * install restarts it on the new port). It still converges; the backup is the waste.
     */
    probeMayBackUp?: boolean;
  }

  /**
   * `pulumi up` after `change`: exits 0; the stack says VERSION and healthy;
   * the service answers VERSION; every thread reads back; no backup was taken
   * (none of these is an upgrade); the pid changed only if a restart was
   * expected; and a second `pulumi up --expect-no-changes` exits 0.
   */
  async function converges(what: string, o: Expect): Promise<CliResult> {
    const pid = w.pid();
    const objects = await w.backupObjects();
    const up = await w.stack.up(["--diff"], { allowFailure: true });
    expect(up.code, `${what}:\n${tail(up)}`).toBe(0);
    expect(await w.stack.outputs()).toMatchObject({ version: VERSION, healthStatus: "healthy" });
    expect(await readyz(url)).toEqual({ status: 200, version: `v${VERSION}` });
    for (const t of threads) expect(await readBodies(api(), t)).toEqual(t.bodies);
    if (o.restart) expect(w.pid(), `${what} restarts the service`).not.toBe(pid);
    else expect(w.pid(), `${what} stops nothing`).toBe(pid);
    const taken = (await w.backupObjects()).filter((k) => !objects.includes(k));
    if (o.probeMayBackUp && taken.length > 0) {
      console.warn(`${what}: the drift probe re-ran the chain and took a backup (known bug, see probeMayBackUp): ${JSON.stringify(taken)}`);
      expect(text(up)).toMatch(/progressdb-probe[\s\S]*drift/);
      expect(taken.map((k) => k.replace(/.*\/\d{8}T\d{6}Z-/, "")).sort()).toEqual([`${VERSION}-to-${VERSION}.tar.zst`, `${VERSION}-to-${VERSION}.tar.zst.sha256`]);
    } else {
      expect(taken, `${what} takes no backup`).toEqual([]);
    }
    const again = await w.stack.up(["--expect-no-changes", "--diff"], { allowFailure: true });
    expect(again.code, `${what}: the next up must propose no change:\n${tail(again)}`).toBe(0);
    threads.push(await writeThread(api(), 1));
    return up;
  }

  test("a no-op: nothing runs, nothing stops", async () => {
    await converges("a no-op", { restart: false });
  });

  test("backup.prefix changed: nothing is stopped (same pid), no backup is taken", async () => {
    await w.stack.set("progressdb:backup.prefix", "rotated-prefix", { path: true });
    const up = await converges("backup.prefix", { restart: false });
    expect(printedNow(up)).not.toMatch(/stopping progressdb/);
  });

  test("S3 key rotation to a second MinIO user: the new key is the one used (no access yet: the preflight fails, nothing stopped); with access, nothing is stopped", async () => {
    const accessKeyId = `rotated${randomBytes(5).toString("hex")}`;
    const secretAccessKey = randomBytes(24).toString("base64url");
    const added = await minioAdmin(w.minio, "PUT", "/minio/admin/v3/add-user", { accessKey: accessKeyId }, madminEncrypt(w.minio.secretAccessKey, JSON.stringify({ secretKey: secretAccessKey, status: "enabled" })));
    expect(added.status, added.text).toBe(200);
    await w.stack.set("progressdb:s3AccessKeyId", accessKeyId, { secret: true });
    await w.stack.set("progressdb:s3SecretAccessKey", secretAccessKey, { secret: true });
    // The new user has no policy yet: the preflight re-checks S3 with the new key and fails, before anything stops.
    const pid = w.pid();
    const denied = await w.stack.up([], { allowFailure: true });
    expect(denied.code).not.toBe(0);
    expect(text(denied)).toMatch(/S3 bucket s3:\/\/\S+ is not reachable/);
    expect(text(denied)).not.toContain(secretAccessKey);
    expect(w.pid()).toBe(pid);
    expect(await readyz(url)).toEqual({ status: 200, version: `v${VERSION}` });
    const policy = await minioAdmin(w.minio, "PUT", "/minio/admin/v3/set-user-or-group-policy", { policyName: "readwrite", userOrGroup: accessKeyId, isGroup: "false" });
    expect(policy.status, policy.text).toBe(200);
    await converges("S3 key rotation", { restart: false });
  });

  test("SSH key rotation: a second authorized key, the stack switched to it, the old one removed: nothing is stopped", async () => {
    const key = path.join(w.root, "rotated_ed25519");
    const gen = await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "pdb-rotated", "-f", key]);
    expect(gen.code, gen.stderr).toBe(0);
    const authorized = path.join(w.sshd.dir, "authorized_keys");
    const old = readFileSync(authorized, "utf8");
    appendFileSync(authorized, readFileSync(`${key}.pub`, "utf8"));
    await w.stack.set("progressdb:sshPrivateKey", readFileSync(key, "utf8"), { secret: true });
    // The old key no longer gets in: the up can only succeed with the new one.
    writeFileSync(authorized, readFileSync(authorized, "utf8").replace(old, ""));
    expect(readFileSync(authorized, "utf8")).not.toContain(old.trim());
    await converges("SSH key rotation", { restart: false });
  });

  test("a host that shows another key than the pinned one is refused in the handshake: nothing runs, nothing stops; the right key converges", async () => {
    const other = path.join(w.root, "impostor_host_ed25519");
    const gen = await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "pdb-impostor", "-f", other]);
    expect(gen.code, gen.stderr).toBe(0);
    const impostorKey = `[127.0.0.1]:${w.sshd.port} ${readFileSync(`${other}.pub`, "utf8").trim().split(/\s+/).slice(0, 2).join(" ")}`;
    const log = path.join(w.installDir, "logs", "upgrade.log");
    const logBefore = readFileSync(log, "utf8");
    const pid = w.pid();
    await w.stack.set("progressdb:deployment.host.hostKey", impostorKey, { path: true });
    const refused = await w.stack.up([], { allowFailure: true });
    expect(refused.code).not.toBe(0);
    expect(text(refused)).toMatch(/ssh: handshake failed: ssh: host key mismatch/);
    // No host script ran (none logged a line), the service was not touched.
    expect(readFileSync(log, "utf8")).toBe(logBefore);
    expect(w.pid()).toBe(pid);
    expect(await readyz(url)).toEqual({ status: 200, version: `v${VERSION}` });
    await w.stack.set("progressdb:deployment.host.hostKey", w.sshd.hostPublicKey, { path: true });
    await converges("the right host key again", { restart: false });
  });

  test("listen address changed (with the health URL): restarted on the new port with the version proof; the old port is closed", async () => {
    const port = await freePort();
    const old = url;
    await w.stack.set("progressdb:deployment.binary.listenAddr", `127.0.0.1:${port}`, { path: true });
    await w.stack.set("progressdb:health.url", `http://127.0.0.1:${port}`, { path: true });
    url = `http://127.0.0.1:${port}`;
    await converges("listenAddr + health.url", { restart: true, probeMayBackUp: true });
    expect((await w.stack.outputs()).versionProof).toMatch(/^readyz reported "v0\.2\.1"/);
    expect((await readyz(old)).status, "nothing answers on the old port").toBe(0);
  });

  test("health timeout changed: no host action (same pid)", async () => {
    await w.stack.set("progressdb:health.timeoutSeconds", "30", { path: true });
    const up = await converges("health.timeoutSeconds", { restart: false });
    expect(printedNow(up)).not.toMatch(/stopping progressdb/);
  });

  test("`pulumi refresh` after the service was killed outside Pulumi says unhealthy; the next `pulumi up` starts it again", async () => {
    const pid = Number(w.pid());
    process.kill(pid, "SIGKILL");
    await waitFor("the service to be gone", async () => (await readyz(url)).status === 0, 10_000, 100);

    const refresh = await w.stack.run(["refresh", "--yes", "--skip-preview"], { allowFailure: true });
    expect(refresh.code, tail(refresh)).toBe(0);
    const state = JSON.parse(await w.stack.exportState()) as { deployment: { resources: Array<{ type: string; outputs?: Record<string, unknown> }> } };
    const health = state.deployment.resources.find((r) => r.type.endsWith("health:HealthCheck"))!;
    expect(health.outputs, "the HealthCheck's state after the refresh").toMatchObject({ status: "unhealthy" });
    // A plain refresh does not run the program, so the stack's outputs are the last update's: they
    // still say "healthy" (reported). `pulumi refresh --run-program` recomputes them from the
    // refreshed state: that is the refresh an operator must run to see the truth in the outputs.
    const stale = (await w.stack.outputs()).healthStatus;
    console.log(`after the refresh: HealthCheck status ${String(health.outputs?.status)} (${String(health.outputs?.message).split("\n")[0]}); stack output healthStatus ${stale}`);
    const rerun = await w.stack.run(["refresh", "--yes", "--skip-preview", "--run-program"], { allowFailure: true });
    expect(rerun.code, tail(rerun)).toBe(0);
    const outputs = await w.stack.outputs();
    console.log(`after \`pulumi refresh --run-program\`: stack output healthStatus ${outputs.healthStatus}`);
    expect(outputs.healthStatus, "the stack's healthStatus output must not call a stopped service healthy").toBe("unhealthy");
    expect((await readyz(url)).status, "a refresh starts nothing").toBe(0);

    // The next up: the drift probe (components/serviceProbe.ts) sees that 0.2.1 does not answer and
    // renews the run key, so the chain runs again and the install starts the service.
    const up = await w.stack.up(["--diff"], { allowFailure: true });
    console.log(`the up after the refresh exits ${up.code}:\n${tail(up, 25)}`);
    expect(up.code, tail(up)).toBe(0);
    expect(text(up)).toMatch(/progressdb-probe/);
    expect(await readyz(url)).toEqual({ status: 200, version: `v${VERSION}` });
    expect(w.pid()).not.toBe(String(pid));
    expect(await w.stack.outputs()).toMatchObject({ version: VERSION, healthStatus: "healthy" });
    for (const t of threads) expect(await readBodies(api(), t)).toEqual(t.bodies);
    const again = await w.stack.up(["--expect-no-changes", "--diff"], { allowFailure: true });
    expect(again.code, tail(again)).toBe(0);
  });
});
