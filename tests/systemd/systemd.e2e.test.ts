// Binary mode under a real systemd: the real `pulumi` CLI deploys the
// ProgressDB stand-in's releases over SSH to a Debian host whose PID 1 is
// systemd (./nspawnHost.ts), with `serviceManager: systemd` (the program's
// default) and the default paths (/opt/progressdb, /var/lib/progressdb/data).
// Deploy, upgrade, a broken version auto-reverted by the install, a restore of
// the backup taken before an upgrade, and the SSH connection cut during an
// install; each checked through `systemctl` inside the host (the unit active,
// its MainPID the process that listens, its user, the sandbox really applied to
// that process) and through the service's own HTTP API.
import { existsSync, mkdirSync, readlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { REPO, type CliResult } from "../../scripts/lib/pulumiCli";
import { minioUnavailable } from "../fixtures/minio";
import { allPids, cmdline, startProxy, type SwitchableProxy } from "../faults/helpers";
import { waitFor } from "../fixtures/net";
import { readBodies, readyz, waitForBodies, writeThread, type WrittenThread } from "../fixtures/progressdbApi";
import { PULUMI, startEngineWorld, type EngineWorld } from "../e2e/engineWorld";
import { startSystemdHost, systemdHostUnavailable, type SystemdHost } from "./nspawnHost";

const INSTALL_DIR = "/opt/progressdb";
const DB_PATH = "/var/lib/progressdb/data";
const UNIT = "progressdb.service";
/** The HealthCheck and auto-revert budget of this stack (Pulumi.local.yaml has 60 s): the broken build fails fast. */
const HEALTH_S = 12;
const DEBUG_LOG = path.join(REPO, ".state", "systemd-e2e.log");

function why(): string | undefined {
  if (!existsSync(PULUMI)) return `${PULUMI} is missing (run scripts/setup.sh)`;
  for (const f of ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/aws"]) if (!existsSync(f)) return `${f} is missing (scripts/setup.sh installs it)`;
  return systemdHostUnavailable() ?? minioUnavailable();
}
const unavailable = why();
if (unavailable) {
  // CI installs every prerequisite (scripts/setup.sh): a missing one there is a failure, not a skip.
  if (process.env.CI === "true") throw new Error(`tests/systemd/systemd.e2e.test.ts cannot run under CI: ${unavailable}`);
  console.warn(`\n\n*** SKIPPING tests/systemd/systemd.e2e.test.ts: ${unavailable} ***\n`);
}

const text = (r: CliResult) => r.stdout + r.stderr;
const tail = (s: string, n = 40) => s.trim().split("\n").slice(-n).join("\n");

describe.skipIf(!!unavailable)("binary mode under a real systemd (real engine, stand-in releases)", { timeout: 240_000 }, () => {
  let host: SystemdHost;
  let ssh: SwitchableProxy;
  let w: EngineWorld;
  let at021: WrittenThread;
  let at022: WrittenThread;

  async function up(what: string): Promise<CliResult> {
    const r = await w.stack.up([], { allowFailure: true });
    writeFileSync(DEBUG_LOG, `\n===== ${what} (exit ${r.code}, ${r.ms} ms)\n${r.stdout}\n--- stderr\n${r.stderr}\n`, { flag: "a" });
    return r;
  }

  /** Runs `argv` in the host and returns its stdout; fails the test on a non-zero exit. */
  async function inHost(argv: string[]): Promise<string> {
    const r = await host.exec(argv);
    expect(r.code, `${argv.join(" ")}: ${r.stderr}`).toBe(0);
    return r.stdout;
  }

  /**
   * What systemd runs: the unit's state, its MainPID with the binary it executes, and the pid
   * listening on the service port (pids as numbered inside the systemd host).
   */
  async function service(): Promise<{ active: string; mainPid: string; exe: string; listener: string }> {
    const s = await host.show(UNIT, ["ActiveState", "SubState", "MainPID"]);
    const exe = s.MainPID !== "0" ? (await host.exec(["readlink", `/proc/${s.MainPID}/exe`])).stdout.trim() : "";
    const ss = (await host.exec(["ss", "-Hltnp", `sport = :${new URL(w.url).port}`])).stdout;
    return { active: `${s.ActiveState}/${s.SubState}`, mainPid: s.MainPID, exe, listener: /pid=(\d+)/.exec(ss)?.[1] ?? "" };
  }

  /** The unit is active, and the process systemd tracks as its main one runs `version`'s binary and is the one listening. */
  async function expectRunning(version: string): Promise<string> {
    const s = await service();
    expect(s).toEqual({ active: "active/running", mainPid: s.listener, exe: `${INSTALL_DIR}/releases/${version}/progressdb`, listener: expect.stringMatching(/^\d+$/) });
    expect(await readyz(w.url)).toEqual({ status: 200, version: `v${version}` });
    return s.mainPid;
  }

  /** Resolves when this stack's `name`.sh runs inside the host (its text is the `sh -c` argument). */
  async function waitForHostScript(name: "install"): Promise<void> {
    const ns = (p: number) => {
      try {
        return readlinkSync(`/proc/${p}/ns/pid`);
      } catch {
        return "";
      }
    };
    const want = ns(host.initPid);
    await waitFor(
      `${name}.sh running in the systemd host`,
      async () => allPids().some((p) => cmdline(p).join(" ").includes(`# progressdb-upgrades ${name}.sh`) && ns(p) === want),
      180_000,
      20,
    );
  }

  beforeAll(async () => {
    mkdirSync(path.dirname(DEBUG_LOG), { recursive: true });
    writeFileSync(DEBUG_LOG, "");
    host = await startSystemdHost((l) => console.log(l));
    // The stack reaches the host through a proxy that can cut the SSH connection.
    ssh = await startProxy(host.port);
    w = await startEngineWorld({
      stackName: "systemd",
      versions: ["0.2.1", "0.2.2", { version: "0.2.3", fault: "exit-at-start" }, "0.2.4"],
      stackFile: (local, ctx) => {
        const edited = local
          .replace(`port: ${ctx.sshd.port}`, `port: ${ssh.port}`)
          .replace(/^(\s*)hostKey: .*$/m, (_m, indent: string) => `${indent}hostKey: ${JSON.stringify(host.hostKeyFor(ssh.port))}`)
          .replace("serviceManager: process", "serviceManager: systemd")
          .replace(`installDir: ${ctx.root}/host/opt`, `installDir: ${INSTALL_DIR}`)
          .replace(`dbPath: ${ctx.root}/host/data`, `dbPath: ${DB_PATH}`)
          .replace("timeoutSeconds: 60", `timeoutSeconds: ${HEALTH_S}`);
        for (const want of [`port: ${ssh.port}`, "serviceManager: systemd", `installDir: ${INSTALL_DIR}`, `dbPath: ${DB_PATH}`, `timeoutSeconds: ${HEALTH_S}`]) expect(edited).toContain(want);
        return edited.replace(/^(\s*progressdb:version:\s*).*$/m, '$1"0.2.1"');
      },
    });
    // The world's own sshd key is the stack's by default; this host authorizes its own.
    await w.stack.set("progressdb:sshPrivateKey", host.privateKey, { secret: true });
  }, 900_000);

  afterAll(async () => {
    await ssh?.stop();
    await host?.stop();
    await w?.stop();
  }, 120_000);

  test("up at 0.2.1: the unit the program wrote is enabled and active, its MainPID is the listener, running as the service user with the sandbox applied", async () => {
    const r = await up("up 0.2.1");
    expect(r.code, tail(text(r))).toBe(0);
    expect(await w.stack.outputs()).toMatchObject({ version: "0.2.1", healthStatus: "healthy" });
    const pid = await expectRunning("0.2.1");

    const unit = await host.show(UNIT, ["FragmentPath", "UnitFileState", "User", "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "ReadWritePaths", "CapabilityBoundingSet", "NRestarts"]);
    expect(unit).toEqual({
      FragmentPath: `/etc/systemd/system/${UNIT}`,
      UnitFileState: "enabled",
      User: "progressdb",
      NoNewPrivileges: "yes",
      ProtectSystem: "strict",
      ProtectHome: "yes",
      PrivateTmp: "yes",
      ReadWritePaths: DB_PATH,
      CapabilityBoundingSet: "",
      NRestarts: "0",
    });
    expect(await inHost(["cat", `/etc/systemd/system/${UNIT}`])).toMatch(/^# Managed by progressdb-upgrades/);

    // What the kernel applied to that process, not only what systemd says it will.
    const uid = (await inHost(["id", "-u", "progressdb"])).trim();
    expect(uid).not.toBe("0");
    const status = await inHost(["cat", `/proc/${pid}/status`]);
    expect(status).toMatch(new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, "m"));
    expect(status).toMatch(/^NoNewPrivs:\s+1$/m);
    expect(status).toMatch(/^CapEff:\s+0+$/m);
    expect(status).toMatch(/^CapBnd:\s+0+$/m);
    // mountinfo: mount point is field 5, its options field 6; the last entry for a point is the one in effect.
    const mounts = new Map((await inHost(["cat", `/proc/${pid}/mountinfo`])).trim().split("\n").map((l) => [l.split(" ")[4], l.split(" ")[5].split(",")[0]] as const));
    expect({ "/": mounts.get("/"), [DB_PATH]: mounts.get(DB_PATH), "/tmp": mounts.has("/tmp"), "/home": mounts.has("/home") }).toEqual({ "/": "ro", [DB_PATH]: "rw", "/tmp": true, "/home": true });
    // And it bites: in the service's mount namespace even root cannot write the release (read-only there).
    const probe = await host.exec(["nsenter", `--target=${pid}`, "--mount", "--", "touch", `${INSTALL_DIR}/current/probe`]);
    expect(probe.stderr).toMatch(/Read-only file system/);

    at021 = await writeThread(w.api("0.2.1"), 2);
  });

  test("upgrade to 0.2.2: systemd restarts the unit on the new release (a new MainPID), after a backup; the data is served", async () => {
    const before = (await service()).mainPid;
    const objects = await w.backupObjects();
    w.stack.setVersionLine("0.2.2");
    const r = await up("up 0.2.2");
    expect(r.code, tail(text(r))).toBe(0);
    expect(await w.stack.outputs()).toMatchObject({ version: "0.2.2", previousVersion: "0.2.1", healthStatus: "healthy", dataContinuity: "passed" });
    const pid = await expectRunning("0.2.2");
    expect(pid).not.toBe(before);
    expect((await w.backupObjects()).filter((k) => !objects.includes(k)).some((k) => k.includes("0.2.1-to-0.2.2"))).toBe(true);
    expect(await waitForBodies(w.api("0.2.2"), at021, at021.bodies.length)).toEqual(at021.bodies);
    at022 = await writeThread(w.api("0.2.2"), 1);
  });

  test("a broken 0.2.3 (exits at start; Restart=on-failure keeps retrying it): the install auto-reverts, up fails saying so, the unit is active on 0.2.2 again", async () => {
    w.stack.setVersionLine("0.2.3");
    const r = await up("up 0.2.3 (broken)");
    expect(r.code).not.toBe(0);
    expect(text(r)).toMatch(/AUTO-REVERTED/);
    // The failed start is systemd's record, in the journal the error points to.
    expect(text(r)).toMatch(/journalctl -u progressdb\.service/);
    const journal = await inHost(["journalctl", "--no-pager", "-o", "cat", "-u", UNIT]);
    expect(journal).toMatch(/progressdb\.service: Main process exited, code=exited, status=[1-9]/);
    expect(journal).toMatch(/progressdb\.service: Scheduled restart job, restart counter is at \d+/);
    await expectRunning("0.2.2");
    expect(await inHost(["readlink", `${INSTALL_DIR}/current`])).toMatch(/releases\/0\.2\.2\/?\s*$/);
    expect(await readBodies(w.api("0.2.2"), at022)).toEqual(at022.bodies);
    expect((await w.stack.outputs()).version).toBe("0.2.2");
  });

  test("restore the backup taken before 0.2.2 and run 0.2.1 on it: the unit runs 0.2.1, the write made at 0.2.2 is gone, the data moved aside is kept", async () => {
    w.stack.setVersionLine("0.2.1");
    await w.stack.set("progressdb:restore.backup", "before:0.2.2", { path: true });
    const r = await up("up 0.2.1 with restore before:0.2.2");
    expect(r.code, tail(text(r))).toBe(0);
    expect(await w.stack.outputs()).toMatchObject({ version: "0.2.1", healthStatus: "healthy" });
    await expectRunning("0.2.1");
    expect(await readBodies(w.api("0.2.1"), at021)).toEqual(at021.bodies);
    expect(await readBodies(w.api("0.2.1"), at022)).toEqual([]);
    expect(await inHost(["ls", path.dirname(DB_PATH)])).toMatch(/^data\.before-restore-/m);
    // The restored data is the service user's again: the sandboxed unit writes to it.
    at021 = await writeThread(w.api("0.2.1"), 1);
    await w.stack.run(["config", "rm", "--path", "progressdb:restore.backup"]);
  });

  test("the SSH connection is cut during the install of 0.2.4: up fails; systemd keeps a known version serving; with SSH back a re-run converges on 0.2.4", async () => {
    w.stack.setVersionLine("0.2.4");
    const pending = up("up 0.2.4 with the SSH connection cut");
    try {
      await waitForHostScript("install");
      await ssh.down();
    } finally {
      await ssh.up();
    }
    const r = await pending;
    expect(r.code).not.toBe(0);
    expect(text(r)).toMatch(/progressdb-deploy-install/);
    // The install ignores the hang-up and finishes (or reverts) on its own: the unit ends active on a known version.
    await waitFor(
      "the unit to be active on 0.2.1 or 0.2.4",
      async () => {
        const s = await service();
        return s.active === "active/running" && s.mainPid === s.listener && /\/releases\/0\.2\.[14]\/progressdb$/.test(s.exe) && (await readyz(w.url)).status === 200;
      },
      60_000,
      200,
    );
    const re = await up("re-run 0.2.4 after the SSH cut");
    expect(re.code, tail(text(re))).toBe(0);
    expect(await w.stack.outputs()).toMatchObject({ version: "0.2.4", healthStatus: "healthy" });
    await expectRunning("0.2.4");
    expect(await waitForBodies(w.api("0.2.4"), at021, at021.bodies.length)).toEqual(at021.bodies);
  });

  test("no secret in the unit, the service's environment or the journal", async () => {
    const pid = (await service()).mainPid;
    const seen = [
      await inHost(["cat", `/etc/systemd/system/${UNIT}`]),
      await inHost(["systemctl", "show", UNIT, "--property=Environment,ExecStart"]),
      await inHost(["cat", `/proc/${pid}/environ`]),
      await inHost(["journalctl", "--no-pager", "-o", "cat", "-u", UNIT]),
    ].join("\n");
    expect(seen).toContain("--config"); // the ExecStart is there: this is the service's own record
    for (const s of [...w.secretValues(), host.privateKey.split("\n")[1]]) expect(seen).not.toContain(s);
  });
});
