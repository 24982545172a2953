/**
 * The service is isolated from the rest of the host, through the rendered
 * scripts over real SSH, under the process manager and a real supervisord:
 *
 * - it runs as its own unprivileged user (created when absent), which owns the
 *   data dirs and the 0600 config file it reads, while the releases stay
 *   root's; an install made by an earlier version (service as root, root's
 *   files) is taken over; a port below 1024 is bound with that one capability;
 *   a directory the user cannot enter is refused by the preflight, naming it;
 * - a service name whose unit, supervisor program or pidfile this program did
 *   not write is refused before anything is written or stopped: the foreign
 *   file stays byte-identical and its service keeps running.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  backup,
  install,
  newHost,
  pidOf,
  preflight,
  provision,
  readMessages,
  readyz,
  releaseDir,
  serviceConfig,
  skipMessage,
  startWorld,
  writeSampleData,
  type TestHost,
  type World,
} from "./world";
import { waitFor, which } from "../fixtures/net";

const skip = skipMessage("service isolation integration tests", fs.existsSync("/usr/bin/supervisord") ? undefined : "supervisord missing");

/** uid and gid of a user, or undefined when there is none. */
function idsOf(user: string): { uid: number; gid: number } | undefined {
  try {
    const [uid, gid] = ["-u", "-g"].map((o) => Number(execFileSync("id", [o, user], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })));
    return { uid, gid };
  } catch {
    return undefined;
  }
}

/** The real, effective, saved and filesystem uids (then gids) of a process. */
function processIds(pid: number): { uids: number[]; gids: number[] } {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const ids = (k: string) => new RegExp(`^${k}:\\s+(.*)$`, "m").exec(status)![1].trim().split(/\s+/).map(Number);
  return { uids: ids("Uid"), gids: ids("Gid") };
}

/** A TCP port below 1024 that nothing listens on (this suite runs as root). */
async function freeLowPort(): Promise<number> {
  for (let port = 900 + Math.floor(Math.random() * 50); port < 1024; port++) {
    const free = await new Promise<boolean>((resolve) => {
      const srv = net.createServer().once("error", () => resolve(false));
      srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error("no free port below 1024");
}

/** Every path under dir (dir included) not owned by uid:gid. */
function notOwnedBy(dir: string, uid: number, gid: number): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    const st = fs.lstatSync(p);
    if (st.uid !== uid || st.gid !== gid) out.push(p);
    if (st.isDirectory()) for (const n of fs.readdirSync(p)) walk(path.join(p, n));
  };
  walk(dir);
  return out;
}

describe.skipIf(!!skip)("service isolation", () => {
  let w: World;
  // A user this machine does not have yet: the install must create it.
  const user = `pdbt${crypto.randomBytes(3).toString("hex")}`;
  const foreign: ChildProcess[] = [];

  beforeAll(async () => {
    expect(idsOf(user)).toBeUndefined();
    w = await startWorld({ supervisor: true, versions: ["0.2.1"] });
  }, 180_000);
  afterAll(async () => {
    await w?.stop();
    for (const c of foreign) c.kill("SIGKILL");
    // userdel removes the group of the same name too.
    if (idsOf(user)) execFileSync("userdel", [user]);
  }, 120_000);

  describe("the service's own user", () => {
    let h: TestHost;

    it("is created when absent; the service runs as it, owns its data and its 0600 config, and the releases stay root's", async () => {
      h = await newHost(w, "user", "process", { serviceUser: user, withSeparateKms: true });
      const p = await preflight(w, h, "0.2.1", { s3: null });
      expect(p.code, p.stderr).toBe(0);
      expect(p.stderr).toContain(`created the system user ${user}`);
      const ids = idsOf(user)!;
      const passwd = execFileSync("getent", ["passwd", user], { encoding: "utf8" }).trim().split(":");
      expect(passwd.slice(5)).toEqual(["/nonexistent", "/usr/sbin/nologin"]);
      expect(ids.uid).toBeLessThan(1000); // a system user
      expect(execFileSync("getent", ["group", user], { encoding: "utf8" }).split(":")[2]).toBe(String(ids.gid));

      const i = await install(w, h, "0.2.1");
      expect(i.code, i.stderr).toBe(0);
      const pid = pidOf(h)!;
      expect(processIds(pid)).toEqual({ uids: [ids.uid, ids.uid, ids.uid, ids.uid], gids: [ids.gid, ids.gid, ids.gid, ids.gid] });
      expect(fs.readFileSync(`/proc/${pid}/status`, "utf8")).toMatch(/^NoNewPrivs:\s+1$/m);
      expect(fs.readFileSync(`/proc/${pid}/status`, "utf8")).toMatch(/^CapEff:\s+0+$/m);
      const data = await writeSampleData(h, "0.2.1", 2);
      expect(await readMessages(h, "0.2.1", data.threadKey)).toEqual(data.bodies);
      // What the service wrote is the user's; so is everything in the data dirs.
      expect(notOwnedBy(h.params.dbPath, ids.uid, ids.gid)).toEqual([]);
      expect(notOwnedBy(h.params.kmsDataDir!, ids.uid, ids.gid)).toEqual([]);
      const cfg = fs.statSync(path.join(releaseDir(h, "0.2.1"), "config.yaml"));
      expect([cfg.mode & 0o777, cfg.uid, cfg.gid]).toEqual([0o600, ids.uid, ids.gid]);
      const bin = fs.statSync(path.join(releaseDir(h, "0.2.1"), "progressdb"));
      expect([bin.mode & 0o777, bin.uid, bin.gid]).toEqual([0o755, 0, 0]);
      for (const d of [h.params.installDir, path.join(h.params.installDir, "releases"), releaseDir(h, "0.2.1"), path.join(h.params.installDir, "bin")]) {
        expect(fs.statSync(d).uid, d).toBe(0);
      }
    });

    it("takes over an install made by an earlier version (service as root, root's files): restarted once as the user, files given to it", async () => {
      const ids = idsOf(user)!;
      const launcher = path.join(h.params.installDir, "bin", `${h.params.serviceName}-launch`);
      // What the previous version of the program wrote: its launcher header, no privilege drop.
      fs.writeFileSync(
        launcher,
        fs
          .readFileSync(launcher, "utf8")
          .replace("# Managed by progressdb-upgrades (install.sh) — do not edit.", "# Generated by progressdb-upgrades install.sh — do not edit.")
          .replace(/exec setpriv .*? -- env -i/, "exec env -i"),
      );
      expect(fs.readFileSync(launcher, "utf8")).not.toContain("setpriv");
      process.kill(pidOf(h)!, "SIGTERM");
      await waitFor("the service to stop", async () => pidOf(h) === undefined);
      execFileSync("chown", ["-R", "0:0", h.params.dbPath, h.params.kmsDataDir!, path.join(releaseDir(h, "0.2.1"), "config.yaml")]);
      const log = fs.openSync(path.join(h.params.installDir, "logs", `${h.params.serviceName}.log`), "a");
      spawn("setsid", [launcher], { stdio: ["ignore", log, log], detached: true }).unref();
      await waitFor("the old launcher's service to answer", async () => (await readyz(h)).status === 200);
      expect(processIds(pidOf(h)!).uids[0]).toBe(0);

      const i = await install(w, h, "0.2.1");
      expect(i.code, i.stderr).toBe(0);
      expect(i.stderr).not.toContain("nothing to restart");
      const pid = pidOf(h)!;
      expect(processIds(pid).uids).toEqual([ids.uid, ids.uid, ids.uid, ids.uid]);
      expect(notOwnedBy(h.params.dbPath, ids.uid, ids.gid)).toEqual([]);
      expect(notOwnedBy(h.params.kmsDataDir!, ids.uid, ids.gid)).toEqual([]);
      expect(fs.statSync(path.join(releaseDir(h, "0.2.1"), "config.yaml")).uid).toBe(ids.uid);
      // Taken over once: the next run stops nothing.
      const again = await install(w, h, "0.2.1");
      expect(again.code, again.stderr).toBe(0);
      expect(again.stderr).toContain("nothing to restart");
      expect(pidOf(h)).toBe(pid);
    });

    it("a port below 1024 is bound by the unprivileged service, holding that one capability and no other", async () => {
      const low = await freeLowPort();
      const l = await newHost(w, "lowport", "process", { serviceUser: user, listenAddr: `127.0.0.1:${low}` });
      Object.assign(l, { port: low, url: `http://127.0.0.1:${low}` });
      await provision(w, l, "0.2.1");
      expect((await readyz(l)).body.version).toBe("v0.2.1");
      const status = fs.readFileSync(`/proc/${pidOf(l)}/status`, "utf8");
      expect(processIds(pidOf(l)!).uids[0]).toBe(idsOf(user)!.uid);
      // CAP_NET_BIND_SERVICE is bit 10.
      expect(/^CapEff:\s+(\S+)$/m.exec(status)![1]).toBe("0000000000000400");
    });

    it("the preflight refuses a data dir the user cannot reach, naming the directory that blocks it", async () => {
      // A root-only directory on the way, as mkdtemp makes them.
      const locked = path.join(w.root, "locked", "srv");
      const l = await newHost(w, "locked", "process", { serviceUser: user, dbPath: path.join(locked, "progressdb", "data") });
      fs.mkdirSync(locked, { mode: 0o700 });
      const r = await preflight(w, l, "0.2.1", { s3: null });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(
        `the service runs as ${user} (progressdb:deployment.binary.serviceUser), which cannot enter ${locked} (drwx------ root:root), on the way to ${l.params.dbPath}: ProgressDB would not start. Let others search it (chmod o+x ${locked})`,
      );
      expect(fs.existsSync(path.join(l.params.installDir, "staging"))).toBe(false);
    });
  });

  describe("a service name this program did not install", () => {
    /** The refusal every step gives, naming the file, the key and the fix. */
    function expectRefused(r: { code: number; stderr: string; stdout: string }, h: TestHost, file: string): void {
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain(`${file} exists and was not written by progressdb-upgrades`);
      expect(r.stderr).toContain(`progressdb:deployment.binary.serviceName '${h.params.serviceName}' names a service this program does not manage, and it will not overwrite, stop or restart it`);
      expect(r.stderr).toContain("pulumi config set --path progressdb:deployment.binary.serviceName");
    }

    /** Preflight, backup and install all refuse, before anything is written or stopped. */
    async function expectEveryStepRefuses(h: TestHost, file: string): Promise<void> {
      const before = fs.readFileSync(file);
      const p = await preflight(w, h, "0.2.1", { s3: null });
      expectRefused(p, h, file);
      expect(fs.existsSync(path.join(h.params.installDir, "staging"))).toBe(false);
      // backup and install check again (a stack run by an older preflight, or a file that appeared since).
      expectRefused(await backup(w, h, "0.2.1"), h, file);
      expectRefused(await install(w, h, "0.2.1", { config: serviceConfig(h, "0.2.1") }), h, file);
      expect(fs.readFileSync(file).equals(before)).toBe(true);
      expect(fs.existsSync(path.join(h.params.installDir, "releases"))).toBe(false);
    }

    it("supervisor: a program file without the marker; it stays byte-identical and its program keeps running", async () => {
      const h = await newHost(w, "supforeign", "supervisor");
      const conf = path.join(w.supervisor!.confDir, `${h.params.serviceName}.conf`);
      fs.writeFileSync(conf, `[program:${h.params.serviceName}]\ncommand=/bin/sleep 600\nautostart=true\nstartsecs=0\n`);
      expect((await w.supervisor!.ctl("update")).code).toBe(0);
      const status = async () => (await w.supervisor!.ctl("status", h.params.serviceName)).stdout;
      await waitFor("the foreign program to run", async () => /RUNNING/.test(await status()));
      const pid = /pid (\d+)/.exec(await status())![1];
      await expectEveryStepRefuses(h, conf);
      expect(await status()).toMatch(new RegExp(`RUNNING\\s+pid ${pid},`));
    });

    it("supervisor: a program of that name defined in another file", async () => {
      const h = await newHost(w, "supelsewhere", "supervisor");
      fs.writeFileSync(path.join(w.supervisor!.confDir, "someone-else.conf"), `[program:${h.params.serviceName}]\ncommand=/bin/sleep 600\nautostart=true\nstartsecs=0\n`);
      expect((await w.supervisor!.ctl("update")).code).toBe(0);
      const r = await preflight(w, h, "0.2.1", { s3: null });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(
        `progressdb:deployment.binary.serviceName '${h.params.serviceName}' is already a service on this host that this program did not install (supervisord has a program by that name, defined outside ${path.join(w.supervisor!.confDir, `${h.params.serviceName}.conf`)})`,
      );
      expect(fs.existsSync(path.join(w.supervisor!.confDir, `${h.params.serviceName}.conf`))).toBe(false);
      expect((await w.supervisor!.ctl("status", h.params.serviceName)).stdout).toMatch(/RUNNING/);
    });

    it.skipIf(!which("systemctl"))("systemd: a unit without the marker (an alias symlink, as Debian's sshd.service is)", async () => {
      const units = path.join(w.root, "sysd", "etc", "systemd", "system");
      const vendor = path.join(w.root, "sysd", "lib", "systemd", "system", "ssh.service");
      fs.mkdirSync(units, { recursive: true });
      fs.mkdirSync(path.dirname(vendor), { recursive: true });
      fs.writeFileSync(vendor, "[Unit]\nDescription=OpenBSD Secure Shell server\n\n[Service]\nExecStart=/usr/sbin/sshd -D\n");
      const h = await newHost(w, "sysd", "systemd", { serviceName: "sshd", systemdUnitDir: units });
      const unit = path.join(units, "sshd.service");
      fs.symlinkSync(vendor, unit);
      await expectEveryStepRefuses(h, unit);
      expect(fs.readlinkSync(unit)).toBe(vendor);
    });

    it("process: a pidfile whose launcher is not ours; it stays byte-identical and its process keeps running", async () => {
      const h = await newHost(w, "pidforeign", "process");
      const other = spawn("/bin/sleep", ["600"], { stdio: "ignore", detached: true });
      foreign.push(other);
      const pidfile = path.join(h.params.installDir, "run", `${h.params.serviceName}.pid`);
      fs.mkdirSync(path.dirname(pidfile), { recursive: true });
      fs.writeFileSync(pidfile, `${other.pid}\n`);
      await expectEveryStepRefuses(h, pidfile);
      expect(() => process.kill(other.pid!, 0)).not.toThrow();
    });

    it("an install of its own is accepted: the unit, launcher and pidfile it wrote carry the marker", async () => {
      const h = await newHost(w, "supown", "supervisor");
      await provision(w, h, "0.2.1");
      for (const f of [path.join(w.supervisor!.confDir, `${h.params.serviceName}.conf`), path.join(h.params.installDir, "bin", `${h.params.serviceName}-launch`)]) {
        expect(fs.readFileSync(f, "utf8"), f).toMatch(/^[#;] Managed by progressdb-upgrades/m);
      }
      const again = await preflight(w, h, "0.2.1", { s3: null });
      expect(again.code, again.stderr).toBe(0);
    });
  });
});
