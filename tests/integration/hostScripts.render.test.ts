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
  renderBackupScript,
  renderInstallScript,
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
      version: "0.2.0",
      stack: "prod",
      s3: { ...s3, prefix: "it's $HOME/x" },
    });
    for (const shell of ["/bin/sh", "/bin/bash"]) {
      expect(await headerValue(shell, script, "PDB_INSTALL_DIR")).toBe(odd);
      expect(await headerValue(shell, script, "PDB_DB_PATH")).toBe("/data/it's $HOME");
      expect(await headerValue(shell, script, "PDB_S3_PREFIX")).toBe("it's $HOME/x");
      expect(await headerValue(shell, script, "PDB_HEALTH_URL")).toBe("http://127.0.0.1:18080");
      const syntax = await run(shell, ["-n", "-c", script]);
      expect(syntax.code, syntax.stderr).toBe(0);
    }
    expect(script.startsWith("# progressdb-upgrades backup.sh")).toBe(true);
    expect(script).toContain("# ---- lib.sh (inlined) ----");
    expect(script).not.toContain('. "$(dirname -- "$0")/lib.sh"');
  });

  it("never put secrets in the script text; stdin carries them as KEY=VALUE lines", () => {
    const stdin = renderSecretsStdin({ awsAccessKeyId: "AKIA1", awsSecretAccessKey: "s3cr3t", kmsMasterKeyHex: "ab".repeat(32) });
    expect(stdin).toBe(`AWS_ACCESS_KEY_ID=AKIA1\nAWS_SECRET_ACCESS_KEY=s3cr3t\nPROGRESSDB_KMS_MASTER_KEY_HEX=${"ab".repeat(32)}\n`);
    expect(renderSecretsStdin({})).toBe("");
    expect(renderSecretsStdin({ awsSessionToken: "tok" })).toBe("AWS_SESSION_TOKEN=tok\n");
    expect(() => renderSecretsStdin({ awsSecretAccessKey: "a\nb" })).toThrow(/single line/);
    expect(() => renderSecretsStdin({ kmsMasterKeyHex: "zz" })).toThrow(/hex/);
    const install = renderInstallScript({ host, version: "0.2.0", archiveName: "a.tar.gz", keepReleases: 3, healthUrl: "http://127.0.0.1:18080", autoRevertSeconds: 30 });
    const header = install.split("\nset -eu")[0];
    expect(header).not.toMatch(/^(AWS_|PROGRESSDB_KMS|PDB_SECRET)/m);
  });

  it("validate inputs with messages naming the field", () => {
    const base = { host, version: "0.2.0", artifactUrl: "https://x/a.tar.gz", checksumsUrl: "https://x/checksums.txt", archiveName: "a.tar.gz", minFreeMb: 10 };
    expect(() => renderPreflightScript({ ...base, version: "0.2.0; rm -rf /" })).toThrow(/version/);
    expect(() => renderPreflightScript({ ...base, host: { ...host, installDir: "relative" } })).toThrow(/installDir/);
    expect(() => renderPreflightScript({ ...base, host: { ...host, serviceName: "a b" } })).toThrow(/serviceName/);
    expect(() => renderPreflightScript({ ...base, archiveName: "../x" })).toThrow(/archiveName/);
    expect(() => renderPreflightScript({ ...base, sha256: "abc" })).toThrow(/sha256/);
    expect(() => renderBackupScript({ host, version: "0.2.0", stack: "a/b", s3 })).toThrow(/stack/);
    expect(() => renderBackupScript({ host, version: "0.2.0", stack: "x", s3: { ...s3, bucket: "Bad_Bucket" } })).toThrow(/bucket/);
    expect(() => renderInstallScript({ host, version: "0.2.0", archiveName: "a.tar.gz", keepReleases: 0, healthUrl: "http://h:1", autoRevertSeconds: 1 })).toThrow(/keepReleases/);
    expect(() => renderInstallScript({ host, version: "0.2.0", archiveName: "a.tar.gz", keepReleases: 2, healthUrl: "h:1", autoRevertSeconds: 1 })).toThrow(/healthUrl/);
  });

  it("derive a loopback health URL from a wildcard listen address", () => {
    expect(defaultHealthUrl("0.0.0.0:8080")).toBe("http://127.0.0.1:8080");
    expect(defaultHealthUrl(":8080")).toBe("http://127.0.0.1:8080");
    expect(defaultHealthUrl("[::]:8080")).toBe("http://[::1]:8080");
    expect(defaultHealthUrl("10.0.0.5:9000")).toBe("http://10.0.0.5:9000");
  });

  it("embed the service definition for systemd and supervisor only", () => {
    const i = (m: HostParams["serviceManager"]) =>
      renderInstallScript({ host: { ...host, serviceManager: m }, version: "0.2.0", archiveName: "a.tar.gz", keepReleases: 3, healthUrl: "http://127.0.0.1:1", autoRevertSeconds: 5 });
    expect(i("systemd")).toContain("PDB_SERVICE_UNIT='# Managed by progressdb-upgrades");
    expect(i("supervisor")).toContain("[program:progressdb]");
    expect(i("process")).toContain("PDB_SERVICE_UNIT=''");
  });
});

describe("renderSystemdUnit", () => {
  it("renders ExecStart with the flags, the env file and restart policy", () => {
    const unit = renderSystemdUnit({ ...host, configFile: "/etc/progressdb/config.yaml" });
    expect(unit).toContain("ExecStart=/opt/progressdb/current/progressdb --db /var/lib/progressdb --addr 127.0.0.1:18080 --config /etc/progressdb/config.yaml\n");
    expect(unit).toContain("EnvironmentFile=-/opt/progressdb/progressdb.env\n");
    expect(unit).toContain("KillSignal=SIGTERM\n");
    expect(unit).toContain("Restart=on-failure\n");
    expect(unit).toContain("WantedBy=multi-user.target\n");
  });

  it("quotes odd paths and escapes % and $ for systemd", () => {
    const unit = renderSystemdUnit({ ...host, dbPath: "/data/it's 100% $HOME" });
    expect(unit).toContain(`--db "/data/it's 100%% $$HOME"`);
  });

  const analyze = which("systemd-analyze");
  it.skipIf(!analyze)("passes systemd-analyze verify", async () => {
    const dir = tempDir("unit");
    try {
      const h: HostParams = { ...host, installDir: path.join(dir, "opt", "progressdb"), dbPath: path.join(dir, "it's data") };
      // ExecStart must point at an existing executable for verify.
      fs.mkdirSync(path.join(h.installDir, "current"), { recursive: true });
      fs.copyFileSync("/bin/true", path.join(h.installDir, "current", "progressdb"));
      const unitPath = path.join(dir, "pdb-verify-test.service");
      fs.writeFileSync(unitPath, renderSystemdUnit(h));
      const r = await run(analyze!, ["verify", unitPath], { cwd: dir });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr.split("\n").filter((l) => l.includes("pdb-verify-test"))).toEqual([]);
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
    expect(files.sort()).toEqual(["backup.sh", "install.sh", "lib.sh", "preflight.sh", "restore.sh"]);
    const r = await run(shellcheck!, ["-s", "sh", "-x", ...files], { cwd: scripts });
    expect(r.stdout + r.stderr).toBe("");
    expect(r.code).toBe(0);
  });

  it.skipIf(!shellcheck)("passes on the rendered scripts", async () => {
    const dir = tempDir("rendered");
    try {
      const h = { ...host, serviceManager: "supervisor" as const, kmsDataDir: "/var/lib/kms", configFile: "/etc/p.yaml" };
      const rendered = {
        "preflight.sh": renderPreflightScript({ host: h, version: "0.2.0", artifactUrl: "https://x/a.tar.gz", checksumsUrl: "https://x/c.txt", archiveName: "a.tar.gz", minFreeMb: 5, s3 }),
        "backup.sh": renderBackupScript({ host: h, version: "0.2.0", stack: "s", s3 }),
        "install.sh": renderInstallScript({ host: h, version: "0.2.0", archiveName: "a.tar.gz", keepReleases: 3, healthUrl: "http://127.0.0.1:1", autoRevertSeconds: 5 }),
        "restore.sh": renderRestoreScript({ host: h, request: "before:0.2.0", version: "0.1.2", stack: "s", s3 }),
      };
      for (const [name, text] of Object.entries(rendered)) fs.writeFileSync(path.join(dir, name), `#!/bin/sh\n${text}`);
      const r = await run(shellcheck!, ["-s", "sh", ...Object.keys(rendered)], { cwd: dir });
      expect(r.stdout + r.stderr).toBe("");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
