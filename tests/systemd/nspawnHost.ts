/**
 * Test fixture: a Debian host with systemd as PID 1, booted by systemd-nspawn
 * from the cached rootfs (rootfs.ts) with a throw-away overlay on top
 * (--volatile=overlay: the rootfs is never written, everything the run changes
 * is gone when it stops). It shares this machine's network namespace, so its
 * sshd (Debian's ssh.service, with a config of ours on 127.0.0.1:<free port>,
 * keys made per run), the service it runs, MinIO and the release mirror all
 * meet on loopback. Not registered with a host systemd (there is none here):
 * --register=no --keep-unit.
 *
 * Commands run inside through nsenter into the host's init (all namespaces),
 * as root: `systemctl`, `journalctl`, `/proc/<MainPID>` as the host sees them.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { freePort, run, stopChild, tempDir, waitFor, which, type RunResult } from "../fixtures/net";
import { runRemote, writeSshdConfig, type SshdHandle } from "../fixtures/sshd";
import { ensureRootfs } from "./rootfs";

export interface SystemdHost extends SshdHandle {
  /** The host's PID 1 (systemd), as this machine numbers it. */
  initPid: number;
  /** `[127.0.0.1]:<port> ssh-ed25519 …`: the host key as ssh-keyscan would print it for `port` (a proxy's). */
  hostKeyFor(port: number): string;
  /** Runs `argv` inside the host, as root. */
  exec(argv: string[], opts?: { timeoutMs?: number }): Promise<RunResult>;
  /** `systemctl show <unit> -p …` as a record. */
  show(unit: string, props: string[]): Promise<Record<string, string>>;
  /** The boot console so far (for failure messages). */
  console(): string;
}

/** Why the systemd host cannot exist here, or undefined. Cheap checks only. */
export function systemdHostUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "booting a systemd host with systemd-nspawn needs root";
  if (!which("systemd-nspawn")) return "systemd-nspawn is not installed (apt-get install systemd-container)";
  if (!which("mmdebstrap")) return "mmdebstrap is not installed (apt-get install mmdebstrap)";
  if (!which("nsenter")) return "nsenter is not installed (util-linux)";
  return undefined;
}

export async function startSystemdHost(log: (line: string) => void = () => undefined): Promise<SystemdHost> {
  const rootfs = await ensureRootfs(log);
  const dir = tempDir("sdhost");
  for (const [file, comment] of [
    ["ssh_host_ed25519_key", "pdb-systemd-host"],
    ["client_ed25519", "pdb-systemd-client"],
  ]) {
    const r = await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path.join(dir, file)]);
    if (r.code !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
  }
  fs.copyFileSync(path.join(dir, "client_ed25519.pub"), path.join(dir, "authorized_keys"));
  fs.chmodSync(path.join(dir, "authorized_keys"), 0o600);
  const port = await freePort();
  const sshdConfig = writeSshdConfig(dir, port);

  const name = `pdb-systemd-${process.pid}`;
  const consoleFile = path.join(dir, "console.log");
  const out = fs.openSync(consoleFile, "a");
  const nspawn: ChildProcess = spawn(
    "systemd-nspawn",
    [
      "--quiet",
      `--directory=${rootfs}`,
      "--boot",
      "--volatile=overlay",
      "--register=no",
      "--keep-unit",
      `--machine=${name}`,
      `--bind=${dir}`,
      `--bind-ro=${sshdConfig}:/etc/ssh/sshd_config`,
    ],
    { stdio: ["ignore", out, out] },
  );
  fs.closeSync(out);
  const consoleText = () => (fs.existsSync(consoleFile) ? fs.readFileSync(consoleFile, "utf8") : "");
  let initPid = 0;
  const exec = (argv: string[], opts: { timeoutMs?: number } = {}) =>
    run("nsenter", [`--target=${initPid}`, "--all", "--", ...argv], { timeoutMs: opts.timeoutMs ?? 60_000 });
  const hostKey = fs.readFileSync(path.join(dir, "ssh_host_ed25519_key.pub"), "utf8").trim().split(/\s+/).slice(0, 2).join(" ");

  const host: SystemdHost = {
    host: "127.0.0.1",
    port,
    user: "root",
    privateKeyPath: path.join(dir, "client_ed25519"),
    privateKey: fs.readFileSync(path.join(dir, "client_ed25519"), "utf8"),
    hostPublicKey: `[127.0.0.1]:${port} ${hostKey}`,
    hostKeyFor: (p) => `[127.0.0.1]:${p} ${hostKey}`,
    dir,
    pid: nspawn.pid!,
    get initPid() {
      return initPid;
    },
    exec,
    async show(unit, props) {
      const r = await exec(["systemctl", "show", unit, ...props.map((p) => `--property=${p}`)]);
      if (r.code !== 0) throw new Error(`systemctl show ${unit} failed: ${r.stderr}`);
      return Object.fromEntries(r.stdout.trim().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
    },
    console: consoleText,
    async stop() {
      // SIGTERM: nspawn asks the host's systemd to power off, and waits for it.
      await stopChild(nspawn, 30_000);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    await waitFor(
      "systemd-nspawn to start the host's init",
      async () => {
        if (nspawn.exitCode !== null) throw new Error(`systemd-nspawn exited ${nspawn.exitCode}`);
        const child = childrenOf(nspawn.pid!).find((p) => readComm(p) === "systemd");
        if (child) initPid = child;
        return initPid !== 0;
      },
      30_000,
      100,
    );
    // "running", or "degraded" when some unit of the image itself failed; the test asserts on its own units.
    await waitFor(
      "the host's systemd to finish booting",
      async () => {
        if (nspawn.exitCode !== null) throw new Error(`systemd-nspawn exited ${nspawn.exitCode}`);
        const r = await exec(["systemctl", "is-system-running"], { timeoutMs: 10_000 });
        return ["running", "degraded"].includes(r.stdout.trim());
      },
      60_000,
      200,
    );
    await waitFor(`the host's sshd on 127.0.0.1:${port}`, async () => (await runRemote(host, "true", { timeoutMs: 5000 })).code === 0, 30_000, 200);
  } catch (e) {
    const text = consoleText();
    await host.stop();
    throw new Error(`${(e as Error).message}\n--- console:\n${text.slice(-3000)}`, { cause: e });
  }
  return host;
}

function childrenOf(pid: number): number[] {
  try {
    return fs
      .readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

function readComm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "";
  }
}
