// Fault injection with the REAL engine: the local stack driven by the real
// `pulumi` CLI (file backend) over real SSH to the ProgressDB stand-in's
// releases (which behave like the real 0.1.x and 0.2.x: see tests/contract),
// with backups to MinIO. Each fault is injected during a real `pulumi up`; for
// each: the update fails naming the cause, the service still answers a known
// version, the data written through the API reads back (tests/fixtures/
// progressdbApi.ts, independent of the program's own readers), and a re-run
// of `pulumi up` converges. One world and one stack, in order: every upgrade
// is a one-line version change, so each fault gets its own target version.
//
// Versions: the real ones. The stack starts on 0.1.2 (no /readyz: proved by
// the listening binary), and the first case is the one that crosses the data
// format (0.1.2 → 0.2.1, migrated offline with prgcli) with the SSH session
// cut during the install. Every other fault is a same-family upgrade between
// stand-in 0.2.x releases (0.2.2 … 0.2.10), so each case stays about its fault.
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { CliResult, REPO, StackOutputs } from "../../scripts/lib/pulumiCli";
import { minioUnavailable } from "../fixtures/minio";
import { run, waitFor } from "../fixtures/net";
import { readyz, waitForBodies, writeThread, type WrittenThread } from "../fixtures/progressdbApi";
import { PULUMI, startEngineWorld, stopServiceUnder, type EngineWorld } from "../e2e/engineWorld";
import { RestartableSshd, SwitchableProxy, alive, allPids, cmdline, descendants, findPulumiCli, killAll, startProxy, startRestartableSshd } from "./helpers";

const STACK = "faults";
/** The project name in Pulumi.yaml (the stack is organization/<project>/<stack> on a file backend). */
const PROJECT = "progressdb";
/** The auto-revert and HealthCheck budget of this stack (Pulumi.local.yaml has 60 s): the bad builds fail fast. */
const HEALTH_S = 8;

function unavailable(): string | undefined {
  if (!existsSync(PULUMI)) return `${PULUMI} is missing: run scripts/setup.sh`;
  for (const f of ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/aws"]) if (!existsSync(f)) return `${f} is missing (scripts/setup.sh installs it)`;
  return minioUnavailable();
}
const skip = unavailable();
if (skip) console.warn(`\n\n*** SKIPPING the engine fault suite: ${skip} ***\n`);
/** Where every pulumi output of the run is also written, for a human to read after a failure. */
const DEBUG_LOG = path.join(REPO, ".state", "faults-engine.log");

describe.skipIf(!!skip)("faults under the real engine", { timeout: 180_000 }, () => {
  let w: EngineWorld;
  let sshd: RestartableSshd;
  let s3proxy: SwitchableProxy;
  let installDir: string;
  let tmpfsMounted = false;
  let tmpfsError = "";
  /** Every thread written so far: each must read back after every later fault. */
  const samples: WrittenThread[] = [];
  const wrongS3Secret = `wrong-${randomBytes(18).toString("base64url")}`;
  /** Every pulumi command's full result (stdout + stderr), for the secrets check. */
  const captured: string[] = [];

  function record(what: string, r: CliResult): CliResult {
    captured.push(r.stdout, r.stderr);
    writeFileSync(DEBUG_LOG, `\n===== ${what} (exit ${r.code}, ${r.ms} ms)\n${r.stdout}\n--- stderr\n${r.stderr}\n`, { flag: "a" });
    return r;
  }

  function note(what: string, value: unknown): void {
    writeFileSync(DEBUG_LOG, `\n===== ${what}: ${JSON.stringify(value)}\n`, { flag: "a" });
  }

  async function up(what: string, extra: string[] = []): Promise<CliResult> {
    return record(what, await w.stack.up(extra, { allowFailure: true }));
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
    return record(what, await w.stack.run(args, { allowFailure: true, stdin }));
  }

  const text = (r: CliResult) => r.stdout + r.stderr;

  /**
   * Resolves when the named host script of this stack is running on the host:
   * its rendered text is the `sh -c` argument, so /proc shows it. (The
   * non-interactive display prints a step only when it completes, so the
   * output cannot tell a step has started.)
   */
  async function waitForHostScript(name: "preflight" | "backup" | "offsite" | "migrate" | "install", timeoutMs = 120_000): Promise<number> {
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
    return w.stack.outputs();
  }

  /** The pid of the running service (its pidfile), or undefined. */
  function pid(): string | undefined {
    try {
      return w.pid();
    } catch {
      return undefined;
    }
  }

  /** What answers on the service port: `v0.2.x` from /readyz, or 0.1.x proved by the binary the pid runs (0.1.x has no /readyz). */
  async function answering(): Promise<string> {
    const r = await readyz(w.url);
    if (r.status === 200) return r.version ?? "?";
    const p = pid();
    if (r.status === 401 && p) {
      const exe = readlinkSync(`/proc/${p}/exe`);
      const m = new RegExp(`^${installDir}/releases/([^/]+)/progressdb$`).exec(exe);
      if (m && /^0\.1\./.test(m[1])) return m[1];
    }
    return `status ${r.status}`;
  }

  /** The service answers `version` and every thread written so far reads back unchanged. */
  async function expectServing(version: string): Promise<void> {
    expect(await answering()).toBe(/^0\.1\./.test(version) ? version : `v${version}`);
    for (const s of samples) expect(await waitForBodies(w.api(version), s, s.bodies.length)).toEqual(s.bodies);
  }

  /** `pulumi up` exits 0 and the stack, the service and the data agree on `version`. */
  async function expectConverges(what: string, version: string): Promise<CliResult> {
    const r = await up(what);
    expect(r.code, text(r).slice(-4000)).toBe(0);
    expect(await outputs()).toMatchObject({ version, healthStatus: "healthy" });
    await expectServing(version);
    // Written after each fault, read back after every later one.
    samples.push(await writeThread(w.api(version), 2));
    return r;
  }

  beforeAll(async () => {
    mkdirSync(path.dirname(DEBUG_LOG), { recursive: true });
    writeFileSync(DEBUG_LOG, "");
    w = await startEngineWorld({
      stackName: STACK,
      versions: [
        "0.1.2",
        "0.2.1",
        "0.2.2",
        { version: "0.2.3", fault: "exit-at-start" },
        { version: "0.2.4", fault: "wrong-version" },
        "0.2.5",
        "0.2.6",
        "0.2.7",
        "0.2.8",
        "0.2.9",
        "0.2.10",
      ],
      // The stack reaches the host through an sshd that can be cut, and S3 through a proxy that can go down.
      stackFile: async (local, ctx) => {
        sshd = await startRestartableSshd(ctx.sshd);
        s3proxy = await startProxy(ctx.minio.port);
        const edited = local
          .replace(`port: ${ctx.sshd.port}`, `port: ${sshd.port}`)
          .replaceAll(ctx.minio.endpoint, s3proxy.url)
          // Small enough for the tmpfs install dir; a short auto-revert so the bad builds fail fast.
          .replace("minFreeMb: 64", "minFreeMb: 8")
          .replace("timeoutSeconds: 60", `timeoutSeconds: ${HEALTH_S}`);
        for (const want of [`port: ${sshd.port}`, `endpoint: ${s3proxy.url}`, "minFreeMb: 8", `timeoutSeconds: ${HEALTH_S}`]) expect(edited).toContain(want);
        return edited;
      },
    });
    installDir = w.installDir;
    mkdirSync(installDir, { recursive: true });
    // The install dir on a small tmpfs, so the disk-full case can fill it after the preflight.
    const m = await run("mount", ["-t", "tmpfs", "-o", "size=48m,mode=0755", "pdb-faults", installDir]);
    if (m.code === 0) tmpfsMounted = true;
    else tmpfsError = `mount -t tmpfs -o size=48m pdb-faults ${installDir}: exit ${m.code}: ${m.stderr.trim()}`;

    const first = await up("up 0.1.2 (setup)");
    expect(first.code, text(first).slice(-4000)).toBe(0);
    expect(await answering()).toBe("0.1.2");
    samples.push(await writeThread(w.api("0.1.2"), 3));
  }, 300_000);

  afterAll(async () => {
    if (w) stopServiceUnder(w.root);
    if (tmpfsMounted) {
      const u = await run("umount", [installDir]);
      if (u.code !== 0) await run("umount", ["-l", installDir]);
    }
    await s3proxy?.stop();
    await sshd?.stop();
    await w?.stop();
  }, 120_000);

  test("9. the SSH connection is cut during the install of the 0.1.2 → 0.2.1 crossing (after the migration): up fails naming the connection; the host finishes on its own; with sshd back a re-run converges, the 0.1.2 data served by 0.2.1", async () => {
    w.stack.setVersionLine("0.2.1");
    const { r } = await upWhile("SSH cut during the install of 0.2.1", async () => {
      await waitForHostScript("install");
      await sshd.cut();
    }).finally(() => sshd.start());
    expect(r.code).not.toBe(0);
    expect.soft(text(r), "the error names the failed step").toMatch(/progressdb-deploy-install/);
    expect.soft(text(r), "the error names the lost SSH connection").toMatch(/lost the SSH connection|ssh|connection|EOF|dial/i);
    // The migration was done before the cut: the 0.1.2 data is kept beside the migrated dir.
    expect(existsSync(`${w.dbPath}.v0.1.2-kept-before-v0.2.1`)).toBe(true);
    // The install survives a lost session (it ignores SIGHUP): whatever it ends on, it answers a known version.
    const back = await waitFor("the service to answer 0.1.2 or v0.2.1", async () => ["0.1.2", "v0.2.1"].includes(await answering()), 30_000, 200)
      .then(() => "")
      .catch((e: Error) => e.message);
    const logFile = path.join(installDir, "logs", "progressdb.log");
    const hostState = {
      answering: await answering(),
      current: existsSync(path.join(installDir, "current")) ? readlinkSync(path.join(installDir, "current")) : "(none)",
      pid: pid() ?? "(not running)",
      logTail: existsSync(logFile) ? readFileSync(logFile, "utf8").trim().split("\n").slice(-3) : [],
    };
    note("host after the SSH cut", hostState);
    expect.soft(back, `the service answers a known version after the SSH cut (host: ${JSON.stringify(hostState)})`).toBe("");
    const re = await expectConverges("re-run 0.2.1 after the SSH cut", "0.2.1");
    expect(text(re)).not.toMatch(/migrating .* with prgcli/);
    // The install finished on the host during the cut, unseen: its switch was never committed, so the
    // re-run still counts it as one and the continuity gate compares 0.2.1 with what 0.1.2 served.
    expect(await outputs()).toMatchObject({ previousVersion: "0.1.2", dataContinuity: expect.stringMatching(/^passed/), keptData: { version: "0.1.2" } });
  });

  test("1. artifact 404: up fails at the preflight naming the URL; the old version keeps running (same pid); after the fix a re-run converges", async () => {
    const before = pid();
    const rel = w.mirror.release("0.2.2");
    w.mirror.notFound("0.2.2");
    w.stack.setVersionLine("0.2.2");
    const r = await up("404 on 0.2.2");
    // The same failure in the default (non --diff) display an operator gets from a plain `pulumi up --yes`.
    const plain = record("404 on 0.2.2, default display", await w.stack.run(["up", "--yes", "--skip-preview"], { allowFailure: true }));
    w.mirror.reset();
    expect(r.code).not.toBe(0);
    expect(plain.code).not.toBe(0);
    expect(text(plain), "the default display names the failed step").toMatch(/progressdb-preflight-check/);
    expect.soft(text(r), "the error names the failed step").toMatch(/progressdb-preflight-check/);
    for (const out of [text(r), text(plain)]) {
      expect.soft(out, "the failed update names the URL that 404'd").toContain(`download of ${rel.artifactUrl} failed`);
      expect.soft(out, "the failed update says 404").toContain("404");
    }
    expect(pid()).toBe(before);
    await expectServing("0.2.1");
    await expectConverges("re-run 0.2.2 after 404", "0.2.2");
  });

  test("5. the new version exits at start: the install auto-reverts, up fails saying so and where the logs are; setting the version back converges", async () => {
    w.stack.setVersionLine("0.2.3");
    const r = await up("0.2.3 exits at start");
    expect(r.code).not.toBe(0);
    expect.soft(text(r), "the error names the failed step").toMatch(/progressdb-deploy-install/);
    expect.soft(text(r)).toMatch(new RegExp(`0\\.2\\.3 was not proved to answer on ${w.url} within ${HEALTH_S}s`));
    expect.soft(text(r)).toContain("AUTO-REVERTED: current -> releases/0.2.2, and 0.2.2 is running and ready");
    expect.soft(text(r)).toContain(path.join(installDir, "logs", "progressdb.log"));
    // The failed start's own log lines are quoted (the stand-in says which fault it is).
    expect.soft(text(r)).toMatch(/standin.*fault.*exit-at-start/);
    await expectServing("0.2.2");
    // The backup of the failed upgrade was uploaded after the revert, and its result is in the
    // stack's state (where restore.backup before:0.2.3 finds it), though the update failed.
    const state = JSON.parse((await cli("stack export after 0.2.3", ["stack", "export"])).stdout) as { deployment: { resources: Array<{ urn: string; outputs?: { stdout?: string } }> } };
    const offsite = state.deployment.resources.find((x) => x.urn.endsWith("::progressdb-offsite-upload"));
    expect(offsite?.outputs?.stdout).toMatch(/"uri":"s3:\/\/[^"]+-0\.2\.2-to-0\.2\.3\.tar\.zst".*"toVersion":"0\.2\.3"/);
    // The failed update did not change the stack's `version` output, so the
    // downgrade guard sees 0.2.2 as deployed and going back to it is not a downgrade.
    expect((await outputs()).version).toBe("0.2.2");
    w.stack.setVersionLine("0.2.2");
    const back = await expectConverges("back to 0.2.2 after 0.2.3", "0.2.2");
    expect(text(back)).not.toMatch(/is lower than the deployed/);
  });

  test("6. the new version answers with the wrong version: up fails naming the version it saw; the previous version serves; setting the version back converges", async () => {
    w.stack.setVersionLine("0.2.4");
    const r = await up("0.2.4 answers a wrong version");
    expect(r.code).not.toBe(0);
    expect.soft(text(r), "the error names the failed step").toMatch(/progressdb-deploy-install/);
    expect.soft(text(r)).toContain("0.2.4 was not proved to answer");
    expect.soft(text(r)).toContain('"version":"v0.2.4-wrong"');
    expect.soft(text(r)).toContain("AUTO-REVERTED: current -> releases/0.2.2");
    await expectServing("0.2.2");
    expect((await outputs()).version).toBe("0.2.2");
    w.stack.setVersionLine("0.2.2");
    await expectConverges("back to 0.2.2 after 0.2.4", "0.2.2");
  });

  test("2. checksum mismatch: up fails at the preflight naming the URL and both sha256s; nothing stopped; after the fix a re-run converges", async () => {
    const before = pid();
    const rel = w.mirror.release("0.2.5");
    w.mirror.corruptChecksum("0.2.5");
    w.stack.setVersionLine("0.2.5");
    const r = await up("bad checksum on 0.2.5");
    w.mirror.reset();
    expect(r.code).not.toBe(0);
    expect.soft(text(r), "the error names the failed step").toMatch(/progressdb-preflight-check/);
    expect.soft(text(r)).toContain(`sha256 mismatch for ${rel.archiveName} downloaded from ${rel.artifactUrl}`);
    expect.soft(text(r)).toContain(`actual ${rel.sha256}`);
    expect(pid()).toBe(before);
    await expectServing("0.2.2");
    await expectConverges("re-run 0.2.5 after bad checksum", "0.2.5");
  });

  test("3. bad S3 credentials: up fails naming S3 and the auth error, without printing the secret; with the right secret a re-run converges", async () => {
    const before = pid();
    await w.stack.set("progressdb:s3SecretAccessKey", wrongS3Secret, { secret: true });
    expect(readFileSync(w.stack.configFile, "utf8")).not.toContain(wrongS3Secret);
    w.stack.setVersionLine("0.2.6");
    const r = await up("bad S3 secret on 0.2.6");
    await w.stack.set("progressdb:s3SecretAccessKey", w.minio.secretAccessKey, { secret: true });
    expect(r.code).not.toBe(0);
    expect.soft(text(r), "the error names the failed step").toMatch(/progressdb-preflight-check/);
    expect.soft(text(r)).toContain(`S3 bucket s3://${w.minio.bucket} is not reachable`);
    expect.soft(text(r)).toMatch(/403|Forbidden|SignatureDoesNotMatch|InvalidAccessKeyId/);
    expect(text(r)).not.toContain(wrongS3Secret);
    expect(text(r)).not.toContain(w.minio.secretAccessKey);
    expect(pid()).toBe(before);
    await expectServing("0.2.5");
    await expectConverges("re-run 0.2.6 with the right S3 secret", "0.2.6");
  });

  test("4. S3 goes down after the backup's copy: the upload after the start fails naming S3, the update does not complete, the snapshot is kept; with S3 back a re-run uploads it and converges", async () => {
    w.stack.setVersionLine("0.2.7");
    // The preflight has checked S3 by the time the offsite step starts (it waits for the install): take S3 down then.
    const { r } = await upWhile("S3 down during the upload of the backup to 0.2.7", async () => {
      await waitForHostScript("offsite");
      await s3proxy.down();
    }).finally(() => s3proxy.up());
    expect(r.code).not.toBe(0);
    expect.soft(text(r), "the error names the failed step").toMatch(/progressdb-offsite-upload/);
    expect.soft(text(r)).toMatch(/backup stream failed at upload|head-object/);
    expect.soft(text(r)).toContain(s3proxy.url);
    expect.soft(text(r)).toContain("the snapshot is kept in");
    // The install was not held up by S3: the new version runs; nothing is half-done on the host.
    await expectServing("0.2.7");
    expect(existsSync(`${w.dbPath}.backup-snapshot`)).toBe(true);
    expect((await outputs()).version).toBe("0.2.6");
    await expectConverges("re-run 0.2.7 with S3 back", "0.2.7");
    expect(existsSync(`${w.dbPath}.backup-snapshot`)).toBe(false);
    expect((await outputs()).backupUri).toMatch(/-0\.2\.6-to-0\.2\.7\.tar\.zst$/);
  });

  test("7. two `pulumi up` at once: the second fails fast with a lock error naming the stack; the first completes; nothing corrupted", async () => {
    w.stack.setVersionLine("0.2.8");
    const locks = path.join(w.root, "pulumi", "backend", ".pulumi", "locks");
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
    const { r, injected: second } = await upWhile("first of two concurrent ups (0.2.8)", async () => {
      await waitFor("the first up to hold the stack lock", async () => listLocks().length > 0, 60_000, 25);
      return up("second of two concurrent ups");
    });
    expect(second.code).not.toBe(0);
    expect(second.ms).toBeLessThan(15_000);
    expect(text(second)).toMatch(/locked/i);
    expect(text(second)).toContain(`${PROJECT}/${STACK}`);
    expect(r.code, text(r).slice(-4000)).toBe(0);
    expect(listLocks()).toEqual([]);
    expect(await outputs()).toMatchObject({ version: "0.2.8", healthStatus: "healthy" });
    await expectServing("0.2.8");
    const history = await w.stack.history();
    expect(history[0]).toMatchObject({ kind: "update", result: "succeeded" });
    samples.push(await writeThread(w.api("0.2.8"), 1));
  });

  test("8. the pulumi CLI is SIGKILLed during the install: the next up reports it; the documented recovery converges", async () => {
    w.stack.setVersionLine("0.2.9");
    const { r: killed, injected: children } = await upWhile("up 0.2.9 killed during the install", async () => {
      await waitForHostScript("install");
      const cliPid = findPulumiCli(w.stack.projectDir, "up");
      if (!cliPid) throw new Error("no pulumi up process found");
      const kids = descendants(cliPid);
      process.kill(cliPid, "SIGKILL");
      return kids;
    });
    expect(killed.code).not.toBe(0);
    // Plugins the CLI started: give them a moment to notice, then stop the stragglers ourselves
    // (the language host and the providers outlive a SIGKILLed CLI: seen every run).
    const names = new Map(children.map((p) => [p, cmdline(p).slice(0, 2).join(" ")]));
    const lingering = await waitFor("the killed CLI's plugins to exit", async () => children.every((p) => !alive(p)), 5_000, 100)
      .then((): number[] => [])
      .catch(() => killAll(children));
    note("still running 5s after the CLI was killed (then SIGKILLed here)", lingering.map((p) => names.get(p)));

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
    note("pending operations after the kill", pendingOps);
    expect(pendingOps).toContain("creating progressdb-deploy-install");
    // 3) a refresh that drops the pending creates (they were never recorded, so the re-run creates them again).
    const refresh = await cli("refresh --clear-pending-creates", ["refresh", "--yes", "--skip-preview", "--clear-pending-creates"]);
    expect(refresh.code, text(refresh).slice(-3000)).toBe(0);
    // 4) re-run.
    await expectConverges("re-run 0.2.9 after the kill", "0.2.9");
  });

  test("10. disk full during the backup (install dir on a tmpfs filled after the preflight): up fails naming the disk; the old version keeps serving; after freeing space a re-run converges", async (ctx) => {
    if (!tmpfsMounted) ctx.skip(`the disk-full case needs a tmpfs: ${tmpfsError}`);
    w.stack.setVersionLine("0.2.10");
    const filler = path.join(installDir, "filler");
    const { r, injected: dd } = await upWhile("disk full during the backup to 0.2.10", async () => {
      await waitForHostScript("backup");
      return run("dd", ["if=/dev/zero", `of=${filler}`, "bs=1M"]);
    }).finally(() => rmSync(filler, { force: true }));
    expect(dd.stderr).toMatch(/No space left on device/);
    expect(r.code).not.toBe(0);
    expect.soft(text(r)).toMatch(/No space left on device|not enough free disk|cannot extract/);
    // The old version must still be answering (the backup stopped it for the install).
    const after = await answering();
    note("after the disk-full failure the service answers", after);
    expect.soft(after, "the service still answers 0.2.9 after a failed install").toBe("v0.2.9");
    await expectConverges("re-run 0.2.10 after freeing the disk", "0.2.10");
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
      "KMS master key": [w.secrets.kmsMasterKeyHex],
      "API keys": [w.secrets.apiKey, w.secrets.adminApiKey, w.secrets.signingKey],
      "S3 secret key": [w.minio.secretAccessKey],
      "wrong S3 secret": [wrongS3Secret],
      "backend passphrase": [w.secrets.passphrase],
    };
    const haystacks: Record<string, string> = {
      "stack export": exported.stdout,
      "stack history": history.stdout,
      "all pulumi output": captured.join("\n") + w.log.join("\n"),
      "stack file": readFileSync(w.stack.configFile, "utf8"),
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
