// Fault injection with the REAL engine: the local stack driven by the real
// `pulumi` CLI (file backend) over real SSH to the ProgressDB stand-in, with
// backups to MinIO. Each fault is injected during a real `pulumi up`; for each:
// the update fails naming the cause, the service still answers a known
// version, the data written through the API reads back, and a re-run of
// `pulumi up` converges. One world and one stack, in order: every upgrade is a
// one-line version change, so each fault gets its own target version.
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { CliResult, PulumiStack, REPO, StackOutputs } from "../../scripts/lib/pulumiCli";
import { renderLocalStack } from "../../scripts/lib/localStack";
import { freePort, run, waitFor } from "../fixtures/net";
import {
  TestHost,
  World,
  pidOf,
  readMessages,
  readyz,
  skipMessage,
  startWorld,
  stopProcessesUnder,
  writeSampleData,
} from "../integration/world";
import { RestartableSshd, SwitchableProxy, alive, allPids, cmdline, descendants, findPulumiCli, killAll, startProxy, startRestartableSshd } from "./helpers";

const PULUMI = path.join(REPO, ".tools", "bin", "pulumi");
const STACK = "faults";
/** The project name in Pulumi.yaml (the stack is organization/<project>/<stack> on a file backend). */
const PROJECT = "progressdb";
const skip = existsSync(PULUMI) ? skipMessage("engine fault suite") : `${PULUMI} is missing: run scripts/setup.sh`;
/** Where every pulumi output of the run is also written, for a human to read after a failure. */
const DEBUG_LOG = path.join(REPO, ".state", "faults-engine.log");


describe.skipIf(!!skip)("faults under the real engine", () => {
  let world: World;
  let sshd: RestartableSshd;
  let s3proxy: SwitchableProxy;
  let stack: PulumiStack;
  let host: TestHost;
  let root: string;
  let installDir: string;
  let tmpfsMounted = false;
  let tmpfsError = "";
  const samples: Array<{ threadKey: string; bodies: unknown[] }> = [];
  const secrets = {
    kmsMasterKeyHex: randomBytes(32).toString("hex"),
    passphrase: randomBytes(12).toString("hex"),
    wrongS3Secret: `wrong-${randomBytes(18).toString("base64url")}`,
  };
  /** Every line any pulumi command printed, in order. */
  const log: string[] = [];
  /** Every pulumi command's full result (stdout + stderr), for the secrets check. */
  const captured: string[] = [];

  function record(what: string, r: CliResult): CliResult {
    captured.push(r.stdout, r.stderr);
    writeFileSync(DEBUG_LOG, `\n===== ${what} (exit ${r.code}, ${r.ms} ms)\n${r.stdout}\n--- stderr\n${r.stderr}\n`, { flag: "a" });
    return r;
  }

  async function up(what: string, extra: string[] = []): Promise<CliResult> {
    return record(what, await stack.up(extra, { allowFailure: true }));
  }

  /**
   * Runs `pulumi up` while `inject` runs (the fault). The up is always awaited,
   * even when `inject` throws, so no update outlives its test.
   */
  async function upWhile<T>(what: string, inject: () => Promise<T>): Promise<{ r: CliResult; injected: T }> {
    const pending = up(what);
    let injected: T;
    try {
      injected = await inject();
    } catch (e) {
      await pending;
      throw e;
    }
    return { r: await pending, injected };
  }

  async function cli(what: string, args: string[], stdin?: string): Promise<CliResult> {
    return record(what, await stack.run(args, { allowFailure: true, stdin }));
  }

  const text = (r: CliResult) => r.stdout + r.stderr;

  /**
   * Resolves when the named host script (preflight | backup | install) of this
   * stack is running on the host: its rendered text is the `sh -c` argument,
   * so /proc shows it. (The non-interactive `--diff` display prints a step
   * only when it completes, so the output cannot tell a step has started.)
   */
  async function waitForHostScript(name: "preflight" | "backup" | "install", timeoutMs = 120_000): Promise<number> {
    const header = `# progressdb-upgrades ${name}.sh`;
    const mine = `PDB_INSTALL_DIR='${installDir}'`;
    let pid: number | undefined;
    await waitFor(
      `the ${name} script on the host`,
      async () => {
        pid = allPids().find((p) => {
          const c = cmdline(p).join(" ");
          return c.includes(header) && c.includes(mine);
        });
        return pid !== undefined;
      },
      timeoutMs,
      10,
    );
    return pid!;
  }

  async function outputs(): Promise<StackOutputs> {
    return stack.outputs();
  }

  /** Every thread written so far reads back unchanged. */
  async function expectDataIntact(): Promise<void> {
    for (const s of samples) expect(await readMessages(host, s.threadKey)).toEqual(s.bodies);
  }

  /** The service answers `version` (readyz) and the data reads back. */
  async function expectServing(version: string): Promise<void> {
    expect((await readyz(host)).body).toEqual({ status: "ok", version });
    await expectDataIntact();
  }

  /** `pulumi up` exits 0 and the stack, the service and the data agree on `version`. */
  async function expectConverges(what: string, version: string): Promise<CliResult> {
    const r = await up(what);
    expect(r.code, text(r).slice(-4000)).toBe(0);
    expect(await outputs()).toMatchObject({ version, healthStatus: "healthy" });
    await expectServing(version);
    // Written after each fault, read back after every later one.
    samples.push(await writeSampleData(host, 2));
    return r;
  }

  beforeAll(async () => {
    mkdirSync(path.dirname(DEBUG_LOG), { recursive: true });
    writeFileSync(DEBUG_LOG, "");
    world = await startWorld({
      versions: [
        "0.1.2",
        "0.2.0",
        { version: "0.2.1", fault: "exit-at-start" },
        { version: "0.2.2", fault: "wrong-version" },
        "0.2.3",
        "0.2.4",
        "0.2.5",
        "0.2.6",
        "0.2.7",
        "0.2.8",
        "0.2.9",
      ],
    });
    sshd = await startRestartableSshd(world.sshd);
    s3proxy = await startProxy(world.minio.port);
    root = mkdtempSync(path.join(os.tmpdir(), "pdb-faults-"));
    installDir = path.join(root, "host", "opt");
    mkdirSync(installDir, { recursive: true });
    // The install dir on a small tmpfs, so the disk-full case can fill it after the preflight.
    const m = await run("mount", ["-t", "tmpfs", "-o", "size=48m,mode=0755", "pdb-faults", installDir]);
    if (m.code === 0) tmpfsMounted = true;
    else tmpfsError = `mount -t tmpfs -o size=48m pdb-faults ${installDir}: exit ${m.code}: ${m.stderr.trim()}`;

    const servicePort = await freePort();
    host = {
      params: { installDir, dbPath: path.join(root, "host", "data"), serviceManager: "process", serviceName: "progressdb", listenAddr: `127.0.0.1:${servicePort}` },
      port: servicePort,
      url: `http://127.0.0.1:${servicePort}`,
      kmsKeyHex: secrets.kmsMasterKeyHex,
    };
    stack = new PulumiStack({ workDir: path.join(root, "pulumi"), stack: STACK, passphrase: secrets.passphrase, onOutput: (l) => log.push(l) });
    const stackText = renderLocalStack(
      { sshPort: sshd.port, mirrorBaseUrl: world.mirror.baseUrl, s3Endpoint: s3proxy.url, bucket: world.minio.bucket, servicePort, root: path.join(root, "host") },
      "0.1.2",
    )
      // Small enough for the tmpfs install dir; a short auto-revert so the bad builds fail fast.
      .replace("minFreeMb: 64", "minFreeMb: 8")
      .replace("timeoutSeconds: 60", "timeoutSeconds: 8");
    expect(stackText).toContain("minFreeMb: 8");
    expect(stackText).toContain("timeoutSeconds: 8");
    await stack.init(stackText);
    await stack.set("progressdb:sshPrivateKey", sshd.privateKey, { secret: true });
    await stack.set("progressdb:kmsMasterKeyHex", secrets.kmsMasterKeyHex, { secret: true });
    await stack.set("progressdb:s3AccessKeyId", world.minio.accessKeyId, { secret: true });
    await stack.set("progressdb:s3SecretAccessKey", world.minio.secretAccessKey, { secret: true });

    const first = await up("up 0.1.2 (setup)");
    expect(first.code, text(first).slice(-4000)).toBe(0);
    expect((await readyz(host)).body).toEqual({ status: "ok", version: "0.1.2" });
    samples.push(await writeSampleData(host, 3));
  }, 240_000);

  afterAll(async () => {
    // The stand-in the stack started (pidfile), then anything else run from our host dir.
    const pid = host ? pidOf(host) : undefined;
    if (pid) {
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        /* gone */
      }
      await waitFor("the stand-in to exit", async () => !alive(pid), 15_000, 100).catch(() => killAll([pid]));
    }
    if (root) await stopProcessesUnder(root);
    if (tmpfsMounted) {
      const u = await run("umount", [installDir]);
      if (u.code !== 0) await run("umount", ["-l", installDir]);
    }
    await s3proxy?.stop();
    await sshd?.stop();
    await world?.stop();
    if (root) rmSync(root, { recursive: true, force: true });
  }, 120_000);

  test("1. artifact 404: up fails at the preflight naming the URL; the old version keeps running (same pid); after the fix a re-run converges", async () => {
    const pid = pidOf(host);
    const rel = world.mirror.release("0.2.0");
    world.mirror.notFound("0.2.0");
    stack.setVersionLine("0.2.0");
    const r = await up("404 on 0.2.0");
    // The same failure in the default (non --diff) display an operator gets from a plain `pulumi up --yes`.
    const plain = record("404 on 0.2.0, default display", await stack.run(["up", "--yes", "--skip-preview"], { allowFailure: true }));
    world.mirror.reset();
    expect(r.code).not.toBe(0);
    expect(plain.code).not.toBe(0);
    expect(text(plain), "the default display names the failed step").toMatch(/progressdb-preflight-check/);
    expect.soft(text(r), "the error names the failed step").toMatch(/progressdb-preflight-check/);
    for (const out of [text(r), text(plain)]) {
      expect.soft(out, "the failed update names the URL that 404'd").toContain(`download of ${rel.artifactUrl} failed`);
      expect.soft(out, "the failed update says 404").toContain("404");
    }
    expect(pidOf(host)).toBe(pid);
    await expectServing("0.1.2");
    await expectConverges("re-run 0.2.0 after 404", "0.2.0");
  });

  test("5. the new version exits at start: the install auto-reverts, up fails saying so and where the logs are; setting the version back converges", async () => {
    stack.setVersionLine("0.2.1");
    const r = await up("0.2.1 exits at start");
    expect(r.code).not.toBe(0);
    expect.soft(text(r), "the error names the failed step").toMatch(/progressdb-deploy-install/);
    expect.soft(text(r)).toContain(`0.2.1 did not report ready on ${host.url}/readyz within 8s`);
    expect.soft(text(r)).toContain("AUTO-REVERTED: current -> releases/0.2.0, and 0.2.0 is running and ready");
    expect.soft(text(r)).toContain(path.join(installDir, "logs", "progressdb.log"));
    expect.soft(text(r)).toContain("standin fault: exit-at-start");
    await expectServing("0.2.0");
    // The failed update did not change the stack's `version` output, so the
    // downgrade guard sees 0.2.0 as deployed and going back to it is not a downgrade.
    expect((await outputs()).version).toBe("0.2.0");
    stack.setVersionLine("0.2.0");
    const back = await expectConverges("back to 0.2.0 after 0.2.1", "0.2.0");
    expect(text(back)).not.toMatch(/is lower than the deployed/);
  });

  test("6. the new version answers with the wrong version: up fails naming the version it saw; the previous version serves; setting the version back converges", async () => {
    stack.setVersionLine("0.2.2");
    const r = await up("0.2.2 answers a wrong version");
    expect(r.code).not.toBe(0);
    expect.soft(text(r), "the error names the failed step").toMatch(/progressdb-deploy-install/);
    expect.soft(text(r)).toContain("0.2.2 did not report ready");
    expect.soft(text(r)).toContain('"version":"0.2.2-wrong"');
    expect.soft(text(r)).toContain("AUTO-REVERTED: current -> releases/0.2.0");
    await expectServing("0.2.0");
    expect((await outputs()).version).toBe("0.2.0");
    stack.setVersionLine("0.2.0");
    await expectConverges("back to 0.2.0 after 0.2.2", "0.2.0");
  });

  test("2. checksum mismatch: up fails at the preflight naming the URL and both sha256s; nothing stopped; after the fix a re-run converges", async () => {
    const pid = pidOf(host);
    const rel = world.mirror.release("0.2.3");
    world.mirror.corruptChecksum("0.2.3");
    stack.setVersionLine("0.2.3");
    const r = await up("bad checksum on 0.2.3");
    world.mirror.reset();
    expect(r.code).not.toBe(0);
    expect.soft(text(r), "the error names the failed step").toMatch(/progressdb-preflight-check/);
    expect.soft(text(r)).toContain(`sha256 mismatch for ${rel.archiveName} downloaded from ${rel.artifactUrl}`);
    expect.soft(text(r)).toContain(`actual ${rel.sha256}`);
    expect(pidOf(host)).toBe(pid);
    await expectServing("0.2.0");
    await expectConverges("re-run 0.2.3 after bad checksum", "0.2.3");
  });

  test("3. bad S3 credentials: up fails naming S3 and the auth error, without printing the secret; with the right secret a re-run converges", async () => {
    const pid = pidOf(host);
    await stack.set("progressdb:s3SecretAccessKey", secrets.wrongS3Secret, { secret: true });
    expect(readFileSync(stack.configFile, "utf8")).not.toContain(secrets.wrongS3Secret);
    stack.setVersionLine("0.2.4");
    const r = await up("bad S3 secret on 0.2.4");
    await stack.set("progressdb:s3SecretAccessKey", world.minio.secretAccessKey, { secret: true });
    expect(r.code).not.toBe(0);
    expect.soft(text(r), "the error names the failed step").toMatch(/progressdb-preflight-check/);
    expect.soft(text(r)).toContain(`S3 bucket s3://${world.minio.bucket} is not reachable`);
    expect.soft(text(r)).toMatch(/403|Forbidden|SignatureDoesNotMatch|InvalidAccessKeyId/);
    expect(text(r)).not.toContain(secrets.wrongS3Secret);
    expect(text(r)).not.toContain(world.minio.secretAccessKey);
    expect(pidOf(host)).toBe(pid);
    await expectServing("0.2.3");
    await expectConverges("re-run 0.2.4 with the right S3 secret", "0.2.4");
  });

  test("4. S3 goes down during the backup: the backup fails naming the S3 upload, the old version is restarted; with S3 back a re-run converges", async () => {
    stack.setVersionLine("0.2.5");
    // The preflight has checked S3 by the time the backup script runs: take S3 down then.
    const { r } = await upWhile("S3 down during the backup to 0.2.5", async () => {
      await waitForHostScript("backup");
      await s3proxy.down();
    }).finally(() => s3proxy.up());
    expect(r.code).not.toBe(0);
    expect.soft(text(r), "the error names the failed step").toMatch(/progressdb-backup-upload/);
    expect.soft(text(r)).toMatch(/backup stream failed at upload|head-object|could not publish|verification/);
    expect.soft(text(r)).toContain(s3proxy.url);
    expect.soft(text(r)).toContain("restarting it on the release it was running (0.2.4)");
    expect.soft(text(r)).toContain("is running again on 0.2.4");
    await expectServing("0.2.4");
    await expectConverges("re-run 0.2.5 with S3 back", "0.2.5");
  });

  test("7. two `pulumi up` at once: the second fails fast with a lock error naming the stack; the first completes; nothing corrupted", async () => {
    stack.setVersionLine("0.2.6");
    const locks = path.join(root, "pulumi", "backend", ".pulumi", "locks");
    const listLocks = (): string[] => {
      const out: string[] = [];
      const walk = (d: string) => {
        if (!existsSync(d)) return;
        for (const e of readdirSync(d, { withFileTypes: true })) {
          if (e.isDirectory()) walk(path.join(d, e.name));
          else out.push(path.join(d, e.name));
        }
      };
      walk(locks);
      return out;
    };
    const { r, injected: second } = await upWhile("first of two concurrent ups (0.2.6)", async () => {
      await waitFor("the first up to hold the stack lock", async () => listLocks().length > 0, 60_000, 25);
      return up("second of two concurrent ups");
    });
    expect(second.code).not.toBe(0);
    expect(second.ms).toBeLessThan(15_000);
    expect(text(second)).toMatch(/locked/i);
    expect(text(second)).toContain(`${PROJECT}/${STACK}`);
    expect(r.code, text(r).slice(-4000)).toBe(0);
    expect(listLocks()).toEqual([]);
    expect(await outputs()).toMatchObject({ version: "0.2.6", healthStatus: "healthy" });
    await expectServing("0.2.6");
    const history = await stack.history();
    expect(history[0]).toMatchObject({ kind: "update", result: "succeeded" });
    samples.push(await writeSampleData(host, 1));
  });

  test("8. the pulumi CLI is SIGKILLed during the install: the next up reports it; the documented recovery converges", async () => {
    stack.setVersionLine("0.2.7");
    const { r: killed, injected: children } = await upWhile("up 0.2.7 killed during the install", async () => {
      await waitForHostScript("install");
      const cliPid = findPulumiCli(stack.projectDir, "up");
      if (!cliPid) throw new Error("no pulumi up process found");
      const kids = descendants(cliPid);
      process.kill(cliPid, "SIGKILL");
      return kids;
    });
    expect(killed.code).not.toBe(0);
    // Plugins the CLI started: give them a moment to notice, then stop the stragglers ourselves.
    const names = new Map(children.map((p) => [p, cmdline(p).slice(0, 2).join(" ")]));
    const lingering = await waitFor("the killed CLI's plugins to exit", async () => children.every((p) => !alive(p)), 20_000, 100)
      .then((): number[] => [])
      .catch(() => killAll(children));
    writeFileSync(DEBUG_LOG, `\n===== still running 20s after the CLI was killed (then SIGKILLed here): ${JSON.stringify(lingering.map((p) => names.get(p)))}\n`, { flag: "a" });

    // What an operator sees next.
    const next = await up("up right after the kill");
    expect(next.code).not.toBe(0);
    expect(text(next)).toMatch(/locked/i);
    expect(text(next)).toMatch(/pulumi cancel/);

    // Documented recovery on a file backend: 1) drop the dead update's lock.
    const cancel = await cli("cancel", ["cancel", "--yes"]);
    expect(cancel.code, text(cancel)).toBe(0);
    // 2) see the pending operations the dead update left in the state.
    const exported = JSON.parse((await cli("stack export", ["stack", "export"])).stdout) as { deployment: { pending_operations?: Array<{ type: string; resource: { urn: string } }> } };
    const pendingOps = (exported.deployment.pending_operations ?? []).map((o) => `${o.type} ${o.resource.urn.split("::").pop()}`);
    writeFileSync(DEBUG_LOG, `\n===== pending operations after the kill: ${JSON.stringify(pendingOps)}\n`, { flag: "a" });
    expect(pendingOps).toContain("creating progressdb-deploy-install");
    // 3) a refresh that drops the pending creates (they were never recorded, so the re-run creates them again).
    const refresh = await cli("refresh --clear-pending-creates", ["refresh", "--yes", "--skip-preview", "--clear-pending-creates"]);
    expect(refresh.code, text(refresh).slice(-3000)).toBe(0);
    // 4) re-run.
    await expectConverges("re-run 0.2.7 after the kill", "0.2.7");
  });

  test("9. the SSH connection is cut during the install: up fails naming the connection; with sshd back on the same port a re-run converges", async () => {
    stack.setVersionLine("0.2.8");
    const { r } = await upWhile("SSH cut during the install of 0.2.8", async () => {
      await waitForHostScript("install");
      await sshd.cut();
    }).finally(() => sshd.start());
    expect(r.code).not.toBe(0);
    expect.soft(text(r), "the error names the failed step").toMatch(/progressdb-deploy-install/);
    expect.soft(text(r), "the error names the lost SSH connection").toMatch(/ssh|connection|EOF|dial/i);
    // Whatever the host was left on, it answers a known version.
    const seen = (await readyz(host)).body.version;
    writeFileSync(DEBUG_LOG, `\n===== after the SSH cut the service answers ${JSON.stringify(seen)}\n`, { flag: "a" });
    const back = await waitFor("the service to answer 0.2.7 or 0.2.8", async () => ["0.2.7", "0.2.8"].includes((await readyz(host)).body.version ?? ""), 20_000, 200)
      .then(() => "")
      .catch((e: Error) => e.message);
    const logFile = path.join(installDir, "logs", "progressdb.log");
    const hostState = {
      current: existsSync(path.join(installDir, "current")) ? readlinkSync(path.join(installDir, "current")) : "(none)",
      pid: pidOf(host) ?? "(not running)",
      logTail: existsSync(logFile) ? readFileSync(logFile, "utf8").trim().split("\n").slice(-3) : [],
    };
    writeFileSync(DEBUG_LOG, `\n===== host after the SSH cut: ${JSON.stringify(hostState)}\n`, { flag: "a" });
    expect.soft(back, `the service answers a known version after the SSH cut (host: ${JSON.stringify(hostState)})`).toBe("");
    await expectConverges("re-run 0.2.8 after the SSH cut", "0.2.8");
  });

  test("10. disk full during the backup (install dir on a tmpfs filled after the preflight): up fails naming the disk; the old version keeps serving; after freeing space a re-run converges", async () => {
    if (!tmpfsMounted) {
      console.warn(`\n*** SKIPPING the disk-full case: ${tmpfsError} ***\n`);
      return;
    }
    stack.setVersionLine("0.2.9");
    const filler = path.join(installDir, "filler");
    const { r, injected: dd } = await upWhile("disk full during the backup to 0.2.9", async () => {
      await waitForHostScript("backup");
      return run("dd", ["if=/dev/zero", `of=${filler}`, "bs=1M"]);
    }).finally(() => rmSync(filler, { force: true }));
    expect(dd.stderr).toMatch(/No space left on device/);
    expect(r.code).not.toBe(0);
    expect.soft(text(r)).toMatch(/No space left on device|not enough free disk|cannot extract/);
    // The old version must still be answering (the backup stopped it for the install).
    const after = await readyz(host);
    writeFileSync(DEBUG_LOG, `\n===== after the disk-full failure readyz: ${JSON.stringify(after)}\n`, { flag: "a" });
    expect.soft(after.body, "the service still answers 0.2.8 after a failed install").toEqual({ status: "ok", version: "0.2.8" });
    await expectConverges("re-run 0.2.9 after freeing the disk", "0.2.9");
  });

  test("11. neither `pulumi stack export` nor any captured pulumi output contains a test secret", async () => {
    const exported = await cli("stack export (final)", ["stack", "export"]);
    expect(exported.code).toBe(0);
    const history = await cli("stack history (final)", ["stack", "history", "--json", "--show-secrets=false"]);
    expect(history.code).toBe(0);
    const keyBody = sshd.privateKey
      .split("\n")
      .filter((l) => l && !l.startsWith("-----"))
      .join("");
    const needles: Record<string, string[]> = {
      "SSH private key": [sshd.privateKey.trim(), ...sshd.privateKey.split("\n").filter((l) => l.length > 20 && !l.startsWith("-----")), keyBody],
      "KMS master key": [secrets.kmsMasterKeyHex],
      "S3 secret key": [world.minio.secretAccessKey],
      "wrong S3 secret": [secrets.wrongS3Secret],
      "backend passphrase": [secrets.passphrase],
    };
    const haystacks: Record<string, string> = {
      "stack export": exported.stdout,
      "stack history": history.stdout,
      "all pulumi output": captured.join("\n") + log.join("\n"),
      "stack file": readFileSync(stack.configFile, "utf8"),
    };
    expect(captured.length).toBeGreaterThan(20);
    const leaks: string[] = [];
    for (const [hay, content] of Object.entries(haystacks)) {
      for (const [what, values] of Object.entries(needles)) {
        for (const v of values) if (content.includes(v)) leaks.push(`${what} in ${hay}`);
      }
    }
    expect([...new Set(leaks)]).toEqual([]);
  });
});
