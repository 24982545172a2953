/**
 * Failure paths, within a release family (0.2.1 → 0.2.x, 0.1.1 → 0.1.x):
 * each leaves the running service alone (or brings back the version it was
 * running) and says exactly what failed. Plus the operator-managed config file
 * check, and a stale process answering on the service port. Every test has a
 * host of its own and no shared fault switch, so they run concurrently.
 */
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  answeringVersion,
  backup,
  currentLink,
  install,
  KEYS,
  newHost,
  pidOf,
  preflight,
  provision,
  readMessages,
  readyz,
  releaseDir,
  serviceConfig,
  sha256File,
  skipMessage,
  startWorld,
  whoListens,
  writeSampleData,
  type TestHost,
  type World,
} from "./world";
import { freePort, tempDir, waitFor } from "../fixtures/net";
import { v02 } from "../../components/releases/v02";

const skip = skipMessage("faults integration tests");

describe.skipIf(!!skip).concurrent("failure paths", () => {
  let w: World;
  let scratch: string;

  beforeAll(async () => {
    w = await startWorld({
      versions: [
        "0.1.1",
        "0.1.2",
        { version: "0.1.3", fault: "never-ready" },
        "0.2.1",
        { version: "0.2.2", fault: "exit-at-start" },
        { version: "0.2.3", fault: "wrong-version" },
        "0.2.4",
      ],
    });
    scratch = tempDir("faults");
  }, 180_000);
  afterAll(async () => {
    await w?.stop();
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }, 120_000);

  async function runningHost(name: string, version = "0.2.1"): Promise<TestHost> {
    const h = await newHost(w, name, "process");
    await provision(w, h, version);
    expect(await answeringVersion(h)).toBe(version);
    return h;
  }

  it("checksum mismatch: preflight fails naming the URL and both sha256s; the service never stopped", async () => {
    const h = await runningHost("badsum");
    const pid = pidOf(h);
    const rel = w.mirror.release("0.2.4");
    const corrupt = "c".repeat(64);
    const sums = path.join(scratch, "checksums-badsum.txt");
    fs.writeFileSync(sums, (await (await fetch(rel.checksumsUrl)).text()).replace(rel.sha256, corrupt));
    const r = await preflight(w, h, "0.2.4", { checksumsUrl: `file://${sums}` });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(`sha256 mismatch for ${rel.archiveName} downloaded from ${rel.artifactUrl}`);
    expect(r.stderr).toContain(`expected ${corrupt} (from file://${sums}), actual ${rel.sha256}`);
    expect(fs.existsSync(path.join(h.params.installDir, "staging", "0.2.4", rel.archiveName))).toBe(false);
    expect(pidOf(h)).toBe(pid);
    expect((await readyz(h)).body.version).toBe("v0.2.1");
  });

  it("pinned sha256 mismatch fails the same way", async () => {
    const h = await runningHost("pinned");
    const r = await preflight(w, h, "0.2.4", { sha256: "ab".repeat(32) });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`expected ${"ab".repeat(32)} (from the pinned sha256), actual ${w.mirror.release("0.2.4").sha256}`);
  });

  it("404 artifact: preflight fails naming the URL; the service never stopped", async () => {
    const h = await runningHost("notfound");
    const pid = pidOf(h);
    const rel = w.mirror.release("0.2.4");
    const missing = `${w.mirror.baseUrl}/9.9.9/${rel.archiveName}`;
    const r = await preflight(w, h, "0.2.4", { artifactUrl: missing });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`download of ${missing} failed`);
    expect(r.stderr).toContain("404");
    expect(pidOf(h)).toBe(pid);
    expect((await readyz(h)).body.version).toBe("v0.2.1");
  });

  it("S3 unreachable: preflight says so; a backup that loses S3 restarts the old version (exit 3)", async () => {
    const h = await runningHost("s3down");
    const data = await writeSampleData(h, "0.2.1", 1);
    const pid = pidOf(h);
    const dead = { ...w.s3, endpoint: `http://127.0.0.1:${await freePort()}` };
    const p = await preflight(w, h, "0.2.4", { s3: dead });
    expect(p.code).toBe(1);
    expect(p.stderr).toContain(`S3 bucket s3://${w.s3.bucket} is not reachable (endpoint ${dead.endpoint}`);
    expect(p.stderr).toMatch(/Could not connect|connect/i);
    expect(pidOf(h)).toBe(pid);

    const b = await backup(w, h, "0.2.4", { s3: dead });
    expect(b.code).toBe(3);
    expect(b.stdout).toBe("");
    expect(b.stderr).toContain("backup stream failed at upload");
    expect(b.stderr).toContain("restarting it on the release it was running (0.2.1)");
    expect(b.stderr).toContain("is running again on 0.2.1");
    expect((await readyz(h)).body).toEqual({ status: "ok", version: "v0.2.1" });
    expect(await readMessages(h, "0.2.1", data.threadKey)).toEqual(data.bodies);

    // A failed backup records no result: the retry for the same upgrade (same run key) backs up for real.
    expect(fs.existsSync(path.join(h.params.installDir, "run", "backup-last"))).toBe(false);
  });

  it("bad S3 credentials: preflight fails with the S3 error; a backup restarts the old version", async () => {
    const h = await runningHost("badcreds");
    const pid = pidOf(h);
    const secrets = { awsAccessKeyId: w.secrets.awsAccessKeyId, awsSecretAccessKey: "wrong-secret-value" };
    const p = await preflight(w, h, "0.2.4", { secrets });
    expect(p.code).toBe(1);
    expect(p.stderr).toContain(`S3 bucket s3://${w.s3.bucket} is not reachable`);
    expect(p.stderr).toMatch(/403|Forbidden|SignatureDoesNotMatch/);
    expect(pidOf(h)).toBe(pid);

    const b = await backup(w, h, "0.2.4", { secrets });
    expect(b.code).toBe(3);
    expect(b.stderr).toMatch(/SignatureDoesNotMatch|AccessDenied|Forbidden|403/);
    expect((await readyz(h)).body.version).toBe("v0.2.1");
    expect(pidOf(h)).not.toBe(pid); // restarted by the trap
  });

  it("missing tools and low disk: preflight names them and changes nothing", async () => {
    const h = await runningHost("tools");
    const pid = pidOf(h);
    const noAws = { ...h, params: { ...h.params, awsCli: "/nonexistent/bin/aws" } };
    const t = await preflight(w, noAws, "0.2.4");
    expect(t.code).toBe(1);
    expect(t.stderr).toContain("required tools missing on the host: aws(/nonexistent/bin/aws)");
    const d = await preflight(w, h, "0.2.4", { minFreeMb: 999_999_999 });
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(new RegExp(`not enough free disk; ${h.params.installDir}: \\d+ MB free, 999999999 MB required`));
    expect(fs.existsSync(path.join(h.params.installDir, "staging", "0.2.4"))).toBe(false);
    expect(pidOf(h)).toBe(pid);
  });

  it("an operator-managed config file that does not fit the target is refused, naming the keys; one that fits is used as is", async () => {
    const h = await newHost(w, "opcfg", "process", { configFile: path.join(w.root, "opcfg", "etc", "progressdb.yaml") });
    fs.mkdirSync(path.dirname(h.params.configFile!), { recursive: true });
    const good = serviceConfig(h, "0.2.1");
    const bad = good
      .replace(`db_path: "${h.params.dbPath}"`, 'db_path: "/srv/elsewhere"')
      .replace(/signing: \[[^\]]*\]/, "signing: []")
      .replace(/\ntelemetry:\n\s+flush_interval: "2s"/, "");
    expect(bad).toContain("    signing: []\n");
    expect(bad).not.toContain("flush_interval");
    fs.writeFileSync(h.params.configFile!, bad, { mode: 0o600 });
    const r = await preflight(w, h, "0.2.1", { s3: null, operatorConfig: v02.operatorConfig });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`config file ${h.params.configFile} does not fit 0.2.1`);
    expect(r.stderr).toContain(`server.db_path is '/srv/elsewhere' but progressdb:storage.dbPath is '${h.params.dbPath}'`);
    expect(r.stderr).toContain("server.api_keys.signing is not set");
    expect(r.stderr).toContain("telemetry.flush_interval is not set");
    expect(r.stderr).not.toContain(KEYS.backend);
    expect(fs.existsSync(path.join(h.params.installDir, "staging"))).toBe(false);

    fs.writeFileSync(h.params.configFile!, good, { mode: 0o600 });
    // It fits, but the service runs as its own user: a root-only file is refused, naming the fix.
    const unreadable = await preflight(w, h, "0.2.1", { s3: null, operatorConfig: v02.operatorConfig });
    expect(unreadable.code).toBe(1);
    expect(unreadable.stderr).toContain(
      `the service runs as progressdb (progressdb:deployment.binary.serviceUser), which cannot read the config file ${h.params.configFile} (deployment.binary.configFile): give it to that user, keeping it private: chown progressdb ${h.params.configFile} && chmod 0600`,
    );
    const [uid, gid] = ["-u", "-g"].map((o) => Number(execFileSync("id", [o, "progressdb"], { encoding: "utf8" })));
    fs.chownSync(h.params.configFile!, uid, gid);
    const ok = await preflight(w, h, "0.2.1", { s3: null, operatorConfig: v02.operatorConfig });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toContain(`config file ${h.params.configFile} fits 0.2.1`);
    const i = await install(w, h, "0.2.1", { config: null });
    expect(i.code, i.stderr).toBe(0);
    expect(i.json!.proof).toBe('/readyz reports "v0.2.1"');
    expect(fs.existsSync(path.join(releaseDir(h, "0.2.1"), "config.yaml"))).toBe(false);
    expect(fs.readFileSync(`/proc/${pidOf(h)}/cmdline`, "utf8").split("\0")).toContain(h.params.configFile);
  });

  it("a fresh host with no data: backup is skipped", async () => {
    const h = await newHost(w, "fresh", "process");
    const b = await backup(w, h, "0.2.1");
    expect(b.code, b.stderr).toBe(0);
    expect(b.json).toMatchObject({ skipped: true, fromVersion: "" });
  });

  it("install without a staged archive fails before touching anything", async () => {
    const h = await runningHost("nostage");
    const pid = pidOf(h);
    const r = await install(w, h, "0.2.4");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("run the preflight for 0.2.4 first");
    expect(pidOf(h)).toBe(pid);
  });

  it("install without the service config on stdin fails before touching anything", async () => {
    const h = await runningHost("noconfig");
    const pid = pidOf(h);
    expect((await preflight(w, h, "0.2.4", { s3: null })).code).toBe(0);
    const r = await install(w, h, "0.2.4", { config: null });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("no service config on stdin (PDB_SERVICE_CONFIG_B64) and no deployment.binary.configFile (nothing was changed)");
    expect(currentLink(h)).toBe(releaseDir(h, "0.2.1"));
    expect(pidOf(h)).toBe(pid);
  });

  it("a new version that exits at start is auto-reverted (exit 5) and the old one serves again", async () => {
    const h = await runningHost("revert");
    const data = await writeSampleData(h, "0.2.1", 2);
    expect((await preflight(w, h, "0.2.2", { s3: null })).code).toBe(0);
    const r = await install(w, h, "0.2.2", { autoRevertSeconds: 10, backupUri: "s3://b/k" });
    expect(r.code).toBe(5);
    expect(r.stderr).toContain(`0.2.2 was not proved to answer on ${h.url} within 10s`);
    expect(r.stderr).toContain("(the service is not running)");
    expect(r.stderr).toContain("AUTO-REVERTED: current -> releases/0.2.1, and 0.2.1 is running and ready");
    expect(r.stderr).toContain(path.join(h.params.installDir, "logs", `${h.params.serviceName}.log`));
    expect(r.stderr).toContain("fault exit-at-start");
    expect(r.stderr).toContain("The pre-upgrade backup is s3://b/k.");
    expect(currentLink(h)).toBe(releaseDir(h, "0.2.1"));
    expect((await readyz(h)).body.version).toBe("v0.2.1");
    expect(await readMessages(h, "0.2.1", data.threadKey)).toEqual(data.bodies);
  });

  it("a new version that reports another version on /readyz is auto-reverted, quoting what it said", async () => {
    const h = await runningHost("wrongver");
    expect((await preflight(w, h, "0.2.3", { s3: null })).code).toBe(0);
    const r = await install(w, h, "0.2.3", { autoRevertSeconds: 6 });
    expect(r.code).toBe(5);
    expect(r.stderr).toContain(`0.2.3 was not proved to answer on ${h.url} within 6s (last seen: GET /readyz: 200 {"status":"ok","version":"v0.2.3-wrong"})`);
    expect((await readyz(h)).body.version).toBe("v0.2.1");
  });

  it("0.1.x: a new version that never answers /healthz is reverted, and the old one is proved by its binary", async () => {
    const h = await runningHost("v01revert", "0.1.1");
    const data = await writeSampleData(h, "0.1.1", 2);
    expect((await preflight(w, h, "0.1.3", { s3: null })).code).toBe(0);
    const r = await install(w, h, "0.1.3", { autoRevertSeconds: 6 });
    expect(r.code).toBe(5);
    expect(r.stderr).toContain(`0.1.3 was not proved to answer on ${h.url} within 6s (last seen: GET /healthz: 503`);
    expect(r.stderr).toContain("AUTO-REVERTED: current -> releases/0.1.1, and 0.1.1 is running and ready");
    expect(whoListens(h)!.exe).toBe(path.join(releaseDir(h, "0.1.1"), "progressdb"));
    expect(await answeringVersion(h)).toBe("0.1.1");
    expect(await readMessages(h, "0.1.1", data.threadKey)).toEqual(data.bodies);
  });

  it("a stale process on the port: the 0.1.2 install fails naming the pid and binary that answered (exit 6)", async () => {
    const h = await newHost(w, "stale", "process");
    const staleBin = w.mirror.release("0.1.1").binaryPath;
    const staleDb = path.join(scratch, "stale-db");
    const stale = spawn(staleBin, ["--addr", h.params.listenAddr, "--db", staleDb], { stdio: "ignore", cwd: scratch });
    try {
      await waitFor("the stale 0.1.1 on the port", async () => (await fetch(`${h.url}/healthz`).then((x) => x.ok, () => false)), 10_000);
      expect((await preflight(w, h, "0.1.2", { s3: null })).code).toBe(0);
      const r = await install(w, h, "0.1.2", { autoRevertSeconds: 6, backupUri: "s3://bucket/key.tar.gz" });
      expect(r.code).toBe(6);
      const want = sha256File(path.join(releaseDir(h, "0.1.2"), "progressdb"));
      expect(r.stderr).toContain(
        `last seen: pid ${stale.pid} listening on port ${h.port} runs ${staleBin} (sha256 ${sha256File(staleBin)}), not releases/0.1.2/progressdb (sha256 ${want})`,
      );
      expect(r.stderr).toContain("and there is no previous release to revert to");
      expect(r.stderr).toContain("The pre-upgrade backup is s3://bucket/key.tar.gz.");
      // Our 0.1.2 could not bind the port; the stale process is what answers.
      expect(r.stderr).toContain("address already in use");
      expect(pidOf(h)).toBeUndefined();
      expect(whoListens(h)!.pid).toBe(stale.pid);
    } finally {
      stale.kill("SIGKILL");
    }
  });

  it("a stale copy of the very same 0.1.2 binary on the port is not taken for this install's 0.1.2 (exit 6)", async () => {
    const h = await newHost(w, "stalecopy", "process");
    const copy = path.join(scratch, "usr-local-bin", "progressdb");
    fs.mkdirSync(path.dirname(copy), { recursive: true });
    fs.copyFileSync(w.mirror.release("0.1.2").binaryPath, copy);
    fs.chmodSync(copy, 0o755);
    const stale = spawn(copy, ["--addr", h.params.listenAddr, "--db", path.join(scratch, "stalecopy-db")], { stdio: "ignore", cwd: scratch });
    try {
      await waitFor("the stale copy on the port", async () => (await fetch(`${h.url}/healthz`).then((x) => x.ok, () => false)), 10_000);
      expect((await preflight(w, h, "0.1.2", { s3: null })).code).toBe(0);
      const r = await install(w, h, "0.1.2", { autoRevertSeconds: 6 });
      expect(r.code, r.stderr).toBe(6);
      const sha = sha256File(copy);
      expect(sha256File(path.join(releaseDir(h, "0.1.2"), "progressdb"))).toBe(sha);
      expect(r.stderr).toContain(`last seen: pid ${stale.pid} listening on port ${h.port} runs ${copy} (sha256 ${sha}), not releases/0.1.2/progressdb`);
      expect(whoListens(h)!.pid).toBe(stale.pid);
    } finally {
      stale.kill("SIGKILL");
    }
  });
});
