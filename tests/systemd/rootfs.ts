/**
 * Test fixture: a Debian bookworm root filesystem with systemd as its init, an
 * OpenSSH server and the tools the host scripts need (preflight.sh's list:
 * tar, gzip, coreutils, setpriv, useradd, curl, the aws CLI; rsync and zstd for
 * the backups), built with mmdebstrap from Debian's packages only. Cached under
 * .tools/systemd-host-<hash of what goes in>/rootfs, so a second run is free;
 * the host boots it with an overlay on top (nspawnHost.ts) and never writes it.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { repoRoot, run } from "../fixtures/net";

export const SUITE = "bookworm";
export const MIRROR = "http://deb.debian.org/debian";
export const PACKAGES = [
  "systemd",
  "systemd-sysv",
  "openssh-server",
  "curl",
  "awscli",
  "rsync",
  "zstd",
  "procps",
  "iproute2",
];

/** The cache dir of this package list: a change to any input builds a new one. */
export function rootfsDir(): string {
  const key = createHash("sha256").update(JSON.stringify({ SUITE, MIRROR, PACKAGES, variant: "minbase" })).digest("hex").slice(0, 12);
  return path.join(repoRoot, ".tools", `systemd-host-${key}`, "rootfs");
}

/** The cached rootfs, built first when missing (about a minute cold, most of it downloading). */
export async function ensureRootfs(log: (line: string) => void = () => undefined): Promise<string> {
  const dir = rootfsDir();
  if (fs.existsSync(path.join(dir, "sbin", "init"))) return dir;
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const started = Date.now();
  const r = await run("mmdebstrap", ["--variant=minbase", `--include=${PACKAGES.join(",")}`, SUITE, tmp, MIRROR], { timeoutMs: 900_000 });
  if (r.code !== 0) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw new Error(`mmdebstrap ${SUITE} failed (exit ${r.code}):\n${r.stderr.slice(-3000)}`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
  log(`built the systemd test host's rootfs in ${((Date.now() - started) / 1000).toFixed(1)} s: ${dir}`);
  return dir;
}
