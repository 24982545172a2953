/**
 * Pure renderer tests (no servers): quoting, validation, stdin format, the
 * systemd unit (checked by `systemd-analyze verify` when available) and the
 * supervisor program, plus shellcheck of the script files and of the rendered
 * scripts.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import {
  defaultHealthUrl,
  loadScript,
  renderBackupScript,
  renderOffsiteScript,
  renderConfigureScript,
  renderFinalizeScript,
  renderInstallScript,
  renderMigrateScript,
  renderReplayScript,
  renderRestoreScript,
  renderPreflightScript,
  renderSecretsStdin,
  renderSupervisorProgram,
  renderSystemdUnit,
  shQuote,
  type HostParams,
} from "../../components/hostScripts";
import { repoRoot, run, tempDir, which } from "../fixtures/net";

const odd = "/srv/it's $HOME `x` \"q\" \\ %n";
const host: HostParams = {
  installDir: "/opt/progressdb",
  dbPath: "/var/lib/progressdb",
  serviceManager: "systemd",
  serviceName: "progressdb",
  listenAddr: "127.0.0.1:18080",
};
const s3 = { bucket: "my-backups", prefix: "pdb", region: "eu-west-1" };
const installBase = { host, version: "0.2.1", archiveName: "a.tar.gz", keepReleases: 3, healthUrl: "http://127.0.0.1:18080", autoRevertSeconds: 30, targetLayout: "store" as const };
const preflightBase = {
  host,
  version: "0.2.1",
  artifactUrl: "https://x/a.tar.gz",
  checksumsUrl: "https://x/checksums.txt",
  archiveName: "a.tar.gz",
  minFreeMb: 10,
  targetLayout: "store" as const,
};

/** Runs the header of a rendered script in a real shell and prints a variable. */
async function headerValue(shell: string, script: string, name: string): Promise<string> {
  const header = script.split("\n# progressdb-upgrades")[0].split("\nset -eu")[0];
  const r = await run(shell, ["-c", `${header}\nprintf '%s' "$${name}"`]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

describe("shQuote", () => {
  it("single-quotes with '\\'' escaping and round-trips through sh and bash", async () => {
    expect(shQuote("it's $HOME")).toBe(`'it'\\''s $HOME'`);
    expect(shQuote("")).toBe("''");
    for (const shell of ["/bin/sh", "/bin/bash"]) {
      for (const v of ["it's $HOME", odd, "a\nb", "'", "''", "$(touch /tmp/pwned)", "*"]) {
        const r = await run(shell, ["-c", `printf '%s' ${shQuote(v)}`]);
        expect(r.stdout).toBe(v);
      }
    }
  });
  it("rejects NUL", () => {
    expect(() => shQuote("a\0b")).toThrow(/NUL/);
  });
});

describe("renderers", () => {
  it("put every parameter in a quoted header that the shell reads back verbatim", async () => {
    const script = renderBackupScript({
      host: { ...host, installDir: odd, dbPath: "/data/it's $HOME", serviceManager: "process" },
      version: "0.2.1",
      runKey: "0.2.1",
      stack: "prod",
      s3: { ...s3, prefix: "it's $HOME/x" },
    });
    for (const shell of ["/bin/sh", "/bin/bash"]) {
      expect(await headerValue(shell, script, "PDB_INSTALL_DIR")).toBe(odd);
      expect(await headerValue(shell, script, "PDB_DB_PATH")).toBe("/data/it's $HOME");
      expect(await headerValue(shell, script, "PDB_S3_PREFIX")).toBe("it's $HOME/x");
      expect(await headerValue(shell, script, "PDB_HEALTH_URL")).toBe("http://127.0.0.1:18080");
      expect(await headerValue(shell, script, "PDB_RUN_KEY")).toBe("0.2.1");
      const syntax = await run(shell, ["-n", "-c", script]);
      expect(syntax.code, syntax.stderr).toBe(0);
    }
    expect(script.startsWith("# progressdb-upgrades backup.sh")).toBe(true);
    expect(script).toContain("# ---- lib.sh (inlined) ----");
    expect(script).not.toContain('. "$(dirname -- "$0")/lib.sh"');
  });

  it("render every script so that sh and bash parse it", async () => {
    for (const script of [
      renderPreflightScript({ ...preflightBase, migrationTool: { url: "https://x/prgcli.tar.gz", archiveName: "prgcli.tar.gz" }, operatorConfig: { dbPathKey: "server.db_path", requiredKeys: ["a.b", "c"] } }),
      renderInstallScript(installBase),
      renderMigrateScript({ host, version: "0.2.1", toolArchive: "/opt/progressdb/staging/0.2.1/prgcli.tar.gz", expectThreads: 3, runKey: "0.2.1" }),
      renderFinalizeScript({ host, version: "0.2.1", previousVersion: "0.1.2", continuity: "failed", finding: "it's\ngone $HOME", healthUrl: "http://127.0.0.1:1" }),
      renderConfigureScript(host),
      renderReplayScript("/opt/it's", "restore"),
    ]) {
      for (const shell of ["/bin/sh", "/bin/bash"]) {
        const syntax = await run(shell, ["-n", "-c", script]);
        expect(syntax.code, syntax.stderr).toBe(0);
      }
    }
    const p = renderPreflightScript({ ...preflightBase, migrationTool: { url: "https://x/prgcli.tar.gz", archiveName: "prgcli.tar.gz" }, operatorConfig: { dbPathKey: "server.db_path", requiredKeys: ["a.b", "c"] } });
    expect(await headerValue("/bin/sh", p, "PDB_TARGET_LAYOUT")).toBe("store");
    expect(await headerValue("/bin/sh", p, "PDB_TOOL_URL")).toBe("https://x/prgcli.tar.gz");
    expect(await headerValue("/bin/sh", p, "PDB_CFG_REQUIRED")).toBe("a.b c");
    const f = renderFinalizeScript({ host, version: "0.2.1", previousVersion: "0.1.2", continuity: "failed", finding: "a\nb", healthUrl: "http://h:1/" });
    expect(await headerValue("/bin/sh", f, "PDB_FINDING")).toBe("a b");
    expect(await headerValue("/bin/sh", f, "PDB_HEALTH_URL")).toBe("http://h:1");
    // Each script's header carries only the host parameters it uses.
    expect(renderConfigureScript(host)).not.toContain("PDB_LISTEN_ADDR=");
    expect(renderConfigureScript(host, 1234)).toContain("PDB_UID='1234'");
  });

  it("never put secrets in the script text; stdin carries them as KEY=VALUE lines, the config base64-encoded", () => {
    const config = "server:\n  api_keys:\n    backend: [\"sk_secret\"]\n";
    const stdin = renderSecretsStdin({ awsAccessKeyId: "AKIA1", awsSecretAccessKey: "s3cr3t", serviceConfig: config });
    expect(stdin).toBe(
      `AWS_ACCESS_KEY_ID=AKIA1\nAWS_SECRET_ACCESS_KEY=s3cr3t\nPDB_SERVICE_CONFIG_B64=${Buffer.from(config).toString("base64")}\n`,
    );
    expect(renderSecretsStdin({})).toBe("");
    expect(renderSecretsStdin({ awsSessionToken: "tok" })).toBe("AWS_SESSION_TOKEN=tok\n");
    expect(() => renderSecretsStdin({ awsSecretAccessKey: "a\nb" })).toThrow(/single line/);
    const install = renderInstallScript(installBase);
    const header = install.split("\nset -eu")[0];
    expect(header).not.toMatch(/^(AWS_|PROGRESSDB_|PDB_SECRET|PDB_SERVICE_CONFIG)/m);
    // The launcher gives the service a clean environment; the unit has no EnvironmentFile.
    expect(loadScript("install.sh")).toContain("-- env -i PATH=");
    expect(renderSystemdUnit(host)).not.toMatch(/Environment/);
  });

  it("validate inputs with messages naming the field", () => {
    expect(() => renderPreflightScript({ ...preflightBase, version: "0.2.1; rm -rf /" })).toThrow(/version/);
    expect(() => renderPreflightScript({ ...preflightBase, host: { ...host, installDir: "relative" } })).toThrow(/installDir/);
    expect(() => renderPreflightScript({ ...preflightBase, host: { ...host, serviceName: "a b" } })).toThrow(/serviceName/);
    expect(() => renderPreflightScript({ ...preflightBase, archiveName: "../x" })).toThrow(/archiveName/);
    expect(() => renderPreflightScript({ ...preflightBase, sha256: "abc" })).toThrow(/sha256/);
    expect(() => renderPreflightScript({ ...preflightBase, migrationTool: { url: "https://x/p.tar.gz", archiveName: "../p" } })).toThrow(/migration tool archive/);
    expect(() => renderPreflightScript({ ...preflightBase, migrationTool: { url: "ftp://x", archiveName: "p.tar.gz" } })).toThrow(/migration tool URL/);
    // The tool is verified from checksums.txt even when the server archive's sha256 is pinned.
    expect(() => renderPreflightScript({ ...preflightBase, sha256: "a".repeat(64), checksumsUrl: "", migrationTool: { url: "https://x/p.tar.gz", archiveName: "p.tar.gz" } })).toThrow(/checksumsUrl/);
    expect(() => renderPreflightScript({ ...preflightBase, sha256: "a".repeat(64), checksumsUrl: "" })).not.toThrow();
    // A fleet's instance scope is one level below the stack; nothing else may add a level or climb out.
    expect(() => renderBackupScript({ host, version: "0.2.1", runKey: "0.2.1", stack: "prod/eu-1", s3 })).not.toThrow();
    for (const stack of ["a/b/c", "../b", "a/../b", "a/"]) expect(() => renderBackupScript({ host, version: "0.2.1", runKey: "0.2.1", stack, s3 })).toThrow(/stack/);
    expect(() => renderBackupScript({ host, version: "0.2.1", runKey: "0.2.1", stack: "x", s3: { ...s3, bucket: "Bad_Bucket" } })).toThrow(/bucket/);
    expect(() => renderBackupScript({ host, version: "0.2.1", runKey: "a b", stack: "x", s3 })).toThrow(/runKey/);
    expect(() => renderInstallScript({ ...installBase, keepReleases: 0 })).toThrow(/keepReleases/);
    expect(() => renderInstallScript({ ...installBase, healthUrl: "h:1" })).toThrow(/healthUrl/);
    expect(() => renderMigrateScript({ host, version: "0.2.1", toolArchive: "relative.tar.gz", runKey: "0.2.1" })).toThrow(/toolArchive/);
    expect(() => renderMigrateScript({ host, version: "0.2.1", toolArchive: "/t.tar.gz", expectThreads: -1, runKey: "0.2.1" })).toThrow(/expectThreads/);
    expect(() => renderFinalizeScript({ host, version: "0.2.1", previousVersion: "x y", continuity: "failed", finding: "", healthUrl: "http://h:1" })).toThrow(/previousVersion/);
    expect(() => renderReplayScript("relative", "restore")).toThrow(/installDir/);
  });

  it("derive a loopback health URL from a wildcard listen address", () => {
    expect(defaultHealthUrl("0.0.0.0:8080")).toBe("http://127.0.0.1:8080");
    expect(defaultHealthUrl(":8080")).toBe("http://127.0.0.1:8080");
    expect(defaultHealthUrl("[::]:8080")).toBe("http://[::1]:8080");
    expect(defaultHealthUrl("10.0.0.5:9000")).toBe("http://10.0.0.5:9000");
  });

  it("embed the service definition for systemd and supervisor only", () => {
    const i = (m: HostParams["serviceManager"]) => renderInstallScript({ ...installBase, host: { ...host, serviceManager: m } });
    expect(i("systemd")).toContain("PDB_SERVICE_UNIT='# Managed by progressdb-upgrades");
    expect(i("supervisor")).toContain("[program:progressdb]");
    expect(i("process")).toContain("PDB_SERVICE_UNIT=''");
  });
});

describe("renderSystemdUnit", () => {
  it("renders ExecStart with --config only (0.2.x ignores flags given with it), no environment, and the restart policy", () => {
    const managed = renderSystemdUnit(host);
    expect(managed).toContain("ExecStart=/opt/progressdb/current/progressdb --config /opt/progressdb/current/config.yaml\n");
    expect(managed).toContain("WorkingDirectory=/opt/progressdb/current\n");
    const unit = renderSystemdUnit({ ...host, configFile: "/etc/progressdb/config.yaml" });
    expect(unit).toContain("ExecStart=/opt/progressdb/current/progressdb --config /etc/progressdb/config.yaml\n");
    expect(unit).not.toMatch(/EnvironmentFile|Environment=|--db|--addr/);
    expect(unit).toContain("KillSignal=SIGTERM\n");
    expect(unit).toContain("Restart=on-failure\n");
    expect(unit).toContain("WantedBy=multi-user.target\n");
  });

  it("quotes odd paths and escapes % and $ for systemd", () => {
    const unit = renderSystemdUnit({ ...host, installDir: "/opt/it's 100% $HOME", dbPath: '/data/a "b" 100% $X' });
    expect(unit).toContain(`ExecStart="/opt/it's 100%% $$HOME/current/progressdb" --config "/opt/it's 100%% $$HOME/current/config.yaml"`);
    // $ is not expanded in ReadWritePaths=: only % and the quotes are escaped.
    expect(unit).toContain('ReadWritePaths="/data/a \\"b\\" 100%% $X"\n');
  });

  it("runs the service as its own user, hardened, writing only its data dirs", () => {
    const unit = renderSystemdUnit({ ...host, serviceUser: "pdbsvc", kmsDataDir: "/var/lib/kms" });
    for (const line of [
      "User=pdbsvc",
      "Group=pdbsvc",
      "NoNewPrivileges=yes",
      "ProtectSystem=strict",
      "ReadWritePaths=/var/lib/progressdb",
      "ReadWritePaths=/var/lib/kms",
      "ProtectHome=yes",
      "PrivateTmp=yes",
      "ProtectKernelTunables=yes",
      "ProtectKernelModules=yes",
      "ProtectControlGroups=yes",
      "RestrictSUIDSGID=yes",
      "LockPersonality=yes",
      "CapabilityBoundingSet=",
    ]) {
      expect(unit.split("\n"), line).toContain(line);
    }
    expect(unit).not.toContain("AmbientCapabilities");
    expect(renderSystemdUnit(host)).toContain("User=progressdb\nGroup=progressdb\n");
    // A port below 1024 keeps exactly the capability to bind it.
    const low = renderSystemdUnit({ ...host, listenAddr: "0.0.0.0:443" }).split("\n");
    expect(low).toContain("CapabilityBoundingSet=CAP_NET_BIND_SERVICE");
    expect(low).toContain("AmbientCapabilities=CAP_NET_BIND_SERVICE");
    // ProtectHome=yes would hide a data dir under /home even from ReadWritePaths=.
    const home = renderSystemdUnit({ ...host, dbPath: "/home/pdb/data" }).split("\n");
    expect(home).toContain("ProtectHome=read-only");
    expect(home).toContain("ReadWritePaths=/home/pdb/data");
  });

  const analyze = which("systemd-analyze");
  if (!analyze) console.warn("\n*** SKIPPING systemd-analyze verify of the unit: systemd-analyze is not installed (apt-get install systemd) ***\n");
  it.skipIf(!analyze)("passes systemd-analyze verify", async () => {
    const dir = tempDir("unit");
    try {
      const h: HostParams = { ...host, installDir: path.join(dir, "opt", "progressdb"), dbPath: path.join(dir, "it's data") };
      // ExecStart must point at an existing executable for verify.
      fs.mkdirSync(path.join(h.installDir, "current"), { recursive: true });
      fs.copyFileSync("/bin/true", path.join(h.installDir, "current", "progressdb"));
      // The hardened unit as rendered, and with a separate KMS dir (an odd name) and a port below 1024.
      for (const [name, unitHost] of Object.entries({
        "pdb-verify-test": h,
        "pdb-verify-low": { ...h, listenAddr: "0.0.0.0:443", kmsDataDir: path.join(dir, 'kms "x" 100%') },
      })) {
        const unitPath = path.join(dir, `${name}.service`);
        fs.writeFileSync(unitPath, renderSystemdUnit(unitHost));
        expect(fs.readFileSync(unitPath, "utf8")).toContain("ProtectSystem=strict\n");
        const r = await run(analyze!, ["verify", unitPath], { cwd: dir });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stderr.split("\n").filter((l) => l.includes(name)), name).toEqual([]);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("renderSupervisorProgram", () => {
  it("runs the launcher, logs to the install dir and escapes %", () => {
    const conf = renderSupervisorProgram({ ...host, serviceManager: "supervisor", installDir: "/opt/100% pdb" });
    expect(conf).toContain("[program:progressdb]\n");
    expect(conf).toContain('command="/opt/100%% pdb/bin/progressdb-launch"\n');
    expect(conf).toContain("stdout_logfile=/opt/100%% pdb/logs/progressdb.log\n");
    expect(conf).toContain("stopsignal=TERM\n");
    expect(conf).not.toMatch(/environment=/);
  });
});

describe("shellcheck", () => {
  const shellcheck = which("shellcheck");
  if (!shellcheck) console.warn("\n*** SKIPPING shellcheck tests: shellcheck is not installed (apt-get install shellcheck) ***\n");
  const scripts = path.join(repoRoot, "components", "scripts");

  it.skipIf(!shellcheck)("passes on components/scripts/*.sh (shellcheck -s sh)", async () => {
    const files = fs.readdirSync(scripts).filter((f) => f.endsWith(".sh"));
    expect(files.sort()).toEqual(["backup.sh", "configure.sh", "finalize.sh", "install.sh", "lib.sh", "migrate.sh", "offsite.sh", "preflight.sh", "restore.sh"]);
    const r = await run(shellcheck!, ["-s", "sh", "-x", ...files], { cwd: scripts });
    expect(r.stdout + r.stderr).toBe("");
    expect(r.code).toBe(0);
  });

  it.skipIf(!shellcheck)("passes on the rendered scripts", async () => {
    const dir = tempDir("rendered");
    try {
      const h = { ...host, serviceManager: "supervisor" as const, kmsDataDir: "/var/lib/kms", configFile: "/etc/p.yaml" };
      const rendered = {
        "preflight.sh": renderPreflightScript({
          ...preflightBase,
          host: h,
          migrationTool: { url: "https://x/p.tar.gz", archiveName: "p.tar.gz" },
          operatorConfig: { dbPathKey: "server.db_path", requiredKeys: ["a"] },
          s3,
        }),
        "backup.sh": renderBackupScript({ host: h, version: "0.2.1", runKey: "0.2.1", stack: "s", s3, mode: "snapshot", minFreeMb: 64 }),
        "offsite.sh": renderOffsiteScript({ host: h, version: "0.2.1", runKey: "0.2.1", stack: "s", s3 }),
        "install.sh": renderInstallScript({ ...installBase, host: h }),
        "restore.sh": renderRestoreScript({ host: h, uri: "s3://b/k.tar.gz", sha256: "a".repeat(64), version: "0.1.2", s3 }),
        "migrate.sh": renderMigrateScript({ host: h, version: "0.2.1", toolArchive: "/t/p.tar.gz", runKey: "0.2.1" }),
        "finalize.sh": renderFinalizeScript({ host: h, version: "0.2.1", previousVersion: "0.1.2", continuity: "passed", finding: "", healthUrl: "http://h:1" }),
        "configure.sh": renderConfigureScript(h),
      };
      for (const [name, text] of Object.entries(rendered)) fs.writeFileSync(path.join(dir, name), `#!/bin/sh\n${text}`);
      // SC2317: the inlined lib.sh has helpers a given script never calls (unreachable to shellcheck).
      const r = await run(shellcheck!, ["-s", "sh", "-e", "SC2317", ...Object.keys(rendered)], { cwd: dir });
      expect(r.stdout + r.stderr).toBe("");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
