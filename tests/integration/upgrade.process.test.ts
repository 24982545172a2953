/**
 * The generic upgrade mechanics inside one release family (stand-in 0.2.1 →
 * 0.2.2 → 0.2.3) of a "process"-managed host, through the rendered scripts
 * over real SSH, with a real MinIO: preflight, the verified streaming backup
 * (and its run-key replay), the managed config file, install, convergence,
 * pruning, and no secret anywhere a process list, a log, a backup or a crash
 * dump would show it. The install dir deliberately contains a space, a quote
 * and "$HOME".
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  backup,
  finalize,
  backupListing,
  configure,
  currentLink,
  downloadObject,
  filesUnder,
  install,
  newHost,
  pidOf,
  plainArchive,
  preflight,
  provision,
  readMessages,
  readyz,
  releaseDir,
  secretsOf,
  serviceConfig,
  serviceLog,
  sha256File,
  skipMessage,
  startCmdlinePoller,
  startWorld,
  treeHash,
  untar,
  upgradeLog,
  writeSampleData,
  type BackupJson,
  type Sample,
  type TestHost,
  type World,
} from "./world";
import { run, tempDir } from "../fixtures/net";

const skip = skipMessage("upgrade.process integration tests");

describe.skipIf(!!skip)("upgrade 0.2.1 → 0.2.2 → 0.2.3 (process manager)", () => {
  let w: World;
  let h: TestHost;
  let data: Sample;
  let poller: { stop(): string[] };
  const outputs: string[] = [];
  let b: BackupJson;
  let dbTreeAfterStop: string;
  let kmsTreeAfterStop: string;
  let firstPid: number | undefined;

  beforeAll(async () => {
    poller = startCmdlinePoller();
    w = await startWorld({ versions: ["0.2.1", "0.2.2", "0.2.3"] });
    h = await newHost(w, "proc", "process", {
      withSeparateKms: true,
      installDir: path.join(w.root, "proc", "opt", "it's $HOME dir", "progressdb"),
    });
    const i = await provision(w, h, "0.2.1");
    expect(i).toEqual({ version: "0.2.1", previousVersion: "", proof: '/readyz reports "v0.2.1"', switched: true });
    data = await writeSampleData(h, "0.2.1", 3);
    firstPid = pidOf(h);
  }, 180_000);

  afterAll(async () => {
    poller?.stop();
    await w?.stop();
  }, 120_000);

  it("starts 0.2.1 detached from the SSH session, on its own 0600 config file and a clean environment", async () => {
    expect((await readyz(h)).body).toEqual({ status: "ok", version: "v0.2.1" });
    expect(currentLink(h)).toBe(releaseDir(h, "0.2.1"));
    const cfg = path.join(releaseDir(h, "0.2.1"), "config.yaml");
    expect(fs.statSync(cfg).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(cfg, "utf8")).toBe(serviceConfig(h, "0.2.1"));
    // No env file any more: nothing secret is handed to the service through its environment.
    expect(fs.existsSync(path.join(h.params.installDir, "progressdb.env"))).toBe(false);
    const pid = firstPid!;
    expect(fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean)).toEqual([
      "./progressdb",
      "--config",
      path.join(h.params.installDir, "current", "config.yaml"),
    ]);
    expect(fs.readlinkSync(`/proc/${pid}/exe`)).toBe(path.join(releaseDir(h, "0.2.1"), "progressdb"));
    const environ = fs.readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter(Boolean);
    expect(environ).toEqual(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]);
    // Its own session (setsid): a closed SSH session cannot hang it up.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const sid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[3]);
    expect(sid).toBe(pid);
  });

  it("preflight stages and verifies 0.2.2 without touching the service, and is idempotent", async () => {
    const pid = pidOf(h);
    const p1 = await preflight(w, h, "0.2.2", { tool: true });
    outputs.push(p1.stdout, p1.stderr);
    expect(p1.code, p1.stderr).toBe(0);
    const rel = w.mirror.release("0.2.2");
    // Same family: the data stays as it is, no migration tool is fetched.
    expect(p1.json).toEqual({
      archive: path.join(h.params.installDir, "staging", "0.2.2", rel.archiveName),
      sha256: rel.sha256,
      reused: false,
      layout: "store",
      plan: "start",
      tool: "",
      // The world's bucket is the stack's own (no settings check asked for): nothing to warn about.
      warnings: [],
      // No backup mode asked for (the program always asks: snapshot or stream).
      backup: "none",
    });
    expect(sha256File(p1.json!.archive)).toBe(rel.sha256);
    expect(w.mirror.requests).not.toContain(`/0.2.2/${rel.prgcliArchiveName}`);
    const p2 = await preflight(w, h, "0.2.2", { tool: true });
    expect(p2.code, p2.stderr).toBe(0);
    expect(p2.json!.reused).toBe(true);
    expect(pidOf(h)).toBe(pid);
    expect((await readyz(h)).body.version).toBe("v0.2.1");
  });

  it("backup (stream mode) stops the service, streams a verified tar.zst to S3 with metadata and its sha256 sidecar", async () => {
    const r = await backup(w, h, "0.2.2");
    outputs.push(r.stdout, r.stderr);
    expect(r.code, r.stderr).toBe(0);
    b = r.json!;
    // The service is stopped: the data dir is exactly as it was at the stop.
    expect(pidOf(h)).toBeUndefined();
    expect((await readyz(h)).status).toBe(0);
    // 0.2.x shuts down gracefully on SIGTERM.
    expect(serviceLog(h)).toContain("shutdown: complete");
    dbTreeAfterStop = treeHash(h.params.dbPath);
    kmsTreeAfterStop = treeHash(h.params.kmsDataDir!);

    expect(b.fromVersion).toBe("0.2.1");
    expect(b.toVersion).toBe("0.2.2");
    expect(b.key).toMatch(/^progressdb-backups\/itest\/\d{8}T\d{6}Z-0\.2\.1-to-0\.2\.2\.tar\.zst$/);
    expect(b.uri).toBe(`s3://${w.minio.bucket}/${b.key}`);

    const head = await w.minio.aws(["s3api", "head-object", "--bucket", w.minio.bucket, "--key", b.key!]);
    expect(head.code, head.stderr).toBe(0);
    const meta = JSON.parse(head.stdout) as { ContentLength: number; Metadata: Record<string, string> };
    expect(meta.ContentLength).toBe(b.size);
    // The sha256 is measured in the stream: it is in the sidecar and the result (the ledger), never trusted from the object.
    expect(meta.Metadata).toEqual({ "from-version": "0.2.1", "to-version": "0.2.2", stack: "itest" });

    const sidecar = await w.minio.aws(["s3", "cp", `s3://${w.minio.bucket}/${b.key}.sha256`, "-"]);
    expect(sidecar.stdout).toBe(`${b.sha256}  ${path.basename(b.key!)}\n`);

    // No full download to verify it, and only three aws processes in all (stream, sidecar, head-object).
    expect(r.stderr).not.toContain("partial");
  });

  it("the backup restores to a byte-identical tree, without the master key or any API key", async () => {
    const dir = tempDir("restore");
    try {
      const archive = path.join(dir, "backup.tar.zst");
      await downloadObject(w, b.key!, archive);
      expect(sha256File(archive)).toBe(b.sha256);
      expect(fs.statSync(archive).size).toBe(b.size);
      const x = await untar(archive, path.join(dir, "root"));
      expect(x.code, x.stderr).toBe(0);
      const root = path.join(dir, "root");
      expect(treeHash(path.join(root, h.params.dbPath))).toBe(dbTreeAfterStop);
      expect(treeHash(path.join(root, h.params.kmsDataDir!))).toBe(kmsTreeAfterStop);
      const manifest = JSON.parse(fs.readFileSync(path.join(root, "progressdb-backup.json"), "utf8"));
      expect(manifest).toMatchObject({ fromVersion: "0.2.1", toVersion: "0.2.2", dbPath: h.params.dbPath, kmsDataDir: h.params.kmsDataDir });
      const listing = await run("tar", ["-tf", archive]);
      expect(listing.stdout).not.toMatch(/progressdb\.env|config\.yaml/);
      // No secret, nor the key's bytes, anywhere in the archive.
      const plain = plainArchive(archive);
      for (const s of secretsOf(w, h)) expect(plain.includes(Buffer.from(s)), s).toBe(false);
      expect(plain.includes(Buffer.from(h.kmsKeyHex, "hex"))).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("install switches current to 0.2.2 with its own config, keeps 0.2.1, and the data is intact", async () => {
    const r = await install(w, h, "0.2.2", { backupUri: b.uri });
    outputs.push(r.stdout, r.stderr);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toEqual({ version: "0.2.2", previousVersion: "0.2.1", proof: '/readyz reports "v0.2.2"', switched: true });
    expect((await readyz(h)).body).toEqual({ status: "ok", version: "v0.2.2" });
    expect(currentLink(h)).toBe(releaseDir(h, "0.2.2"));
    expect(fs.existsSync(path.join(releaseDir(h, "0.2.1"), "progressdb"))).toBe(true);
    // A rollback starts 0.2.1 on its own config, kept next to it.
    for (const v of ["0.2.1", "0.2.2"]) {
      const cfg = path.join(releaseDir(h, v), "config.yaml");
      expect(fs.statSync(cfg).mode & 0o777, v).toBe(0o600);
      expect(fs.readFileSync(cfg, "utf8"), v).toBe(serviceConfig(h, v));
    }
    expect(await readMessages(h, "0.2.2", data.threadKey)).toEqual(data.bodies);
    const log = serviceLog(h);
    // The backup stopped 0.2.1 with a clean SIGTERM (flushed, exit 0) before 0.2.2 started.
    expect(log.indexOf("shutdown: complete")).toBeGreaterThan(-1);
    expect(log.indexOf("shutdown: complete")).toBeLessThan(log.indexOf("Version:  v0.2.2"));
  });

  it("re-running the install converges without a restart; it counts as the switch until finalize commits it", async () => {
    const pid = pidOf(h);
    // Not committed yet (an update cut after the install, say): still the switch, so the gate still runs.
    const r = await install(w, h, "0.2.2");
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toEqual({ version: "0.2.2", previousVersion: "0.2.1", proof: '/readyz reports "v0.2.2"', switched: true });
    expect(r.stderr).toContain("0.2.2 is already current, running and ready: nothing to restart");
    expect(pidOf(h)).toBe(pid);
    const f = await finalize(w, h, { version: "0.2.2", previousVersion: "0.2.1", continuity: "passed" });
    expect(f.code, f.stderr).toBe(0);
    // Committed: a later re-run (a config change) is a restart at the same version, compared with nothing.
    const again = await install(w, h, "0.2.2");
    expect(again.code, again.stderr).toBe(0);
    expect(again.json).toEqual({ version: "0.2.2", previousVersion: "0.2.1", proof: '/readyz reports "v0.2.2"', switched: false });
    expect(pidOf(h)).toBe(pid);
  });

  it("a re-run of the backup for the same upgrade (same run key) stops nothing and prints the first result, even with a new S3 prefix", async () => {
    const pid = pidOf(h);
    expect(pid).toBeDefined();
    const r = await backup(w, h, "0.2.2", { s3: { ...w.s3, prefix: "moved-elsewhere" } });
    outputs.push(r.stdout, r.stderr);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toEqual(b);
    expect(r.stderr).toContain("the backup for this upgrade (0.2.2) was already taken: nothing is stopped");
    expect(pidOf(h)).toBe(pid);
    expect((await readyz(h)).body.version).toBe("v0.2.2");
    const ls = await w.minio.aws(["s3", "ls", "--recursive", `s3://${w.minio.bucket}/moved-elsewhere/`]);
    expect(ls.stdout).toBe("");
  });

  // The crash takes ~10 s of the service's countdown: the container-mode host (its own) runs beside it.
  describe.concurrent("side by side", () => {
    it("a 0.2.x start on a config without signing keys crashes with a dump that holds no secret, and is reverted", async () => {
      const p = await preflight(w, h, "0.2.3", { s3: null });
      expect(p.code, p.stderr).toBe(0);
      const crashDir = path.join(h.params.dbPath, "state", "crash");
      const before = fs.existsSync(crashDir) ? fs.readdirSync(crashDir) : [];
      const r = await install(w, h, "0.2.3", { config: serviceConfig(h, "0.2.3", { signing: [] }), autoRevertSeconds: 30 });
      outputs.push(r.stdout, r.stderr);
      expect(r.code, r.stderr).toBe(5);
      expect(r.stderr).toContain("signing keys are required");
      expect(r.stderr).toContain("AUTO-REVERTED: current -> releases/0.2.2, and 0.2.2 is running and ready");
      expect((await readyz(h)).body.version).toBe("v0.2.2");
      expect(await readMessages(h, "0.2.2", data.threadKey)).toEqual(data.bodies);

      const dumps = fs.readdirSync(crashDir).filter((f) => !before.includes(f));
      expect(dumps).toHaveLength(1);
      const dump = fs.readFileSync(path.join(crashDir, dumps[0]), "utf8");
      expect(fs.statSync(path.join(crashDir, dumps[0])).mode & 0o777).toBe(0o600);
      expect(dump).toContain("signing keys are required");
      // The dump prints the whole environment: the launcher gave it nothing but PATH.
      const environ = dump.split("--- environ ---\n")[1].split("\n\n")[0].trim().split("\n");
      expect(environ).toEqual(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]);
      for (const s of secretsOf(w, h)) expect(dump.includes(s), s).toBe(false);
      expect(fs.readdirSync(path.join(h.params.dbPath, "state", "abort")).length).toBeGreaterThan(0);
    }, 90_000);

    it("container mode: configure.sh writes the config into the data mount, 0600 and owned by uid 1000; the backup leaves it out", async () => {
      // No container runtime is needed for these two steps (the socket does not exist: nothing is running).
      const c = await newHost(w, "ctr", "docker", { dockerHost: `unix://${path.join(w.root, "no-docker.sock")}` });
      fs.mkdirSync(path.join(c.params.dbPath, "store"), { recursive: true });
      fs.writeFileSync(path.join(c.params.dbPath, "store", "000001.sst"), "data");
      const text = serviceConfig(c, "0.2.2");
      const r = await configure(w, c, text);
      outputs.push(r.stdout, r.stderr);
      expect(r.code, r.stderr).toBe(0);
      const cfg = path.join(c.params.dbPath, "config.yaml");
      expect(r.json).toEqual({ config: cfg, changed: true, switching: false });
      expect(fs.readFileSync(cfg, "utf8")).toBe(text);
      const st = fs.statSync(cfg);
      expect([st.mode & 0o777, st.uid, st.gid]).toEqual([0o600, 1000, 1000]);
      for (const p of [c.params.dbPath, path.join(c.params.dbPath, "store", "000001.sst")]) expect(fs.statSync(p).uid, p).toBe(1000);
      const again = await configure(w, c, text);
      expect(again.json).toEqual({ config: cfg, changed: false, switching: false });

      const b2 = await backup(w, c, "0.2.2", { stack: "ctr" });
      outputs.push(b2.stdout, b2.stderr);
      expect(b2.code, b2.stderr).toBe(0);
      const names = await backupListing(w, b2.json!.key!);
      const db = c.params.dbPath.slice(1);
      expect(names).toContain(`${db}/store/000001.sst`);
      expect(names).not.toContain(`${db}/config.yaml`);
      expect(fs.existsSync(cfg)).toBe(true);
    });
  });

  it("the next upgrade's backup (new run key) is a new backup, and leaves the crash dumps out", async () => {
    const r = await backup(w, h, "0.2.3");
    outputs.push(r.stdout, r.stderr);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json!.key).not.toBe(b.key);
    expect(r.json).toMatchObject({ fromVersion: "0.2.2", toVersion: "0.2.3" });
    expect(pidOf(h)).toBeUndefined();
    const names = await backupListing(w, r.json!.key!);
    const db = h.params.dbPath.slice(1);
    expect(names).toContain(`${db}/store/`);
    expect(names).toContain(`${db}/state/telemetry/`);
    expect(names.filter((n) => /\/state\/(crash|abort)(\/|$)/.test(n))).toEqual([]);
    // They are still on the host.
    expect(fs.readdirSync(path.join(h.params.dbPath, "state", "crash")).length).toBeGreaterThan(0);
  });

  it("keeps at most keepReleases releases, never the previous one, and rewrites the config of a release", async () => {
    const r = await install(w, h, "0.2.3", { keepReleases: 1 });
    outputs.push(r.stdout, r.stderr);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toEqual({ version: "0.2.3", previousVersion: "0.2.2", proof: '/readyz reports "v0.2.3"', switched: true });
    expect(r.stderr).toContain(`wrote ${path.join(releaseDir(h, "0.2.3"), "config.yaml")} (0600)`);
    expect(fs.readFileSync(path.join(releaseDir(h, "0.2.3"), "config.yaml"), "utf8")).toBe(serviceConfig(h, "0.2.3"));
    expect(fs.readdirSync(path.join(h.params.installDir, "releases")).filter((n) => !n.startsWith(".")).sort()).toEqual(["0.2.2", "0.2.3"]);
    expect(fs.readdirSync(path.join(h.params.installDir, "staging"))).toEqual(["0.2.3"]);
    expect(await readMessages(h, "0.2.3", data.threadKey)).toEqual(data.bodies);
  });

  it("never put a secret in any process's argv or environment, stdout/stderr, the logs, or a world-readable file", async () => {
    const cmdlines = poller.stop();
    expect(cmdlines.length).toBeGreaterThan(20);
    // The poller really saw the scripts run (the ssh client carrying the script text) and the service.
    expect(cmdlines.some((c) => c.includes("PDB_SCRIPT='backup'"))).toBe(true);
    expect(cmdlines.some((c) => c.startsWith("./progressdb --config "))).toBe(true);
    const pid = pidOf(h)!;
    const environ = fs.readFileSync(`/proc/${pid}/environ`, "utf8");
    const logs = [upgradeLog(h), serviceLog(h)];
    expect(logs[0]).toContain("[install]");
    for (const s of secretsOf(w, h)) {
      expect(cmdlines.filter((c) => c.includes(s)), s).toEqual([]);
      for (const o of [...outputs, ...logs, environ]) expect(o.includes(s), s).toBe(false);
    }
    // The secrets are on the host only in the 0600 config files next to the releases.
    const holders = filesUnder(h.params.installDir).filter((f) => secretsOf(w, h).some((s) => fs.readFileSync(f).includes(s)));
    expect(holders.sort()).toEqual(["0.2.2", "0.2.3"].map((v) => path.join(releaseDir(h, v), "config.yaml")));
    for (const f of holders) expect(fs.statSync(f).mode & 0o077, f).toBe(0);
  });
});
