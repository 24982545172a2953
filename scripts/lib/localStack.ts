// The local stack file (Pulumi.local.yaml) moved onto one run's servers: its
// fixed ports and paths are replaced by the ones the fixtures got.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { REPO } from "./pulumiCli";

export interface LocalEndpoints {
  sshPort: number;
  /** The run's sshd host key (known_hosts form), pinned as deployment.host.hostKey. */
  sshHostKey: string;
  mirrorBaseUrl: string;
  s3Endpoint: string;
  bucket: string;
  servicePort: number;
  /** Replaces /tmp/progressdb-local (install dir and data dir live under it). */
  root: string;
}

export const LOCAL_STACK_FILE = path.join(REPO, "Pulumi.local.yaml");

export function renderLocalStack(e: LocalEndpoints, version?: string): string {
  let text = readFileSync(LOCAL_STACK_FILE, "utf8")
    .replaceAll("port: 22022", `port: ${e.sshPort}`)
    .replace(/^(\s*)hostKey: .*$/m, (_m, indent: string) => `${indent}hostKey: ${JSON.stringify(e.sshHostKey)}`)
    .replaceAll("http://127.0.0.1:18090", e.mirrorBaseUrl)
    .replaceAll("http://127.0.0.1:19000", e.s3Endpoint)
    .replaceAll("bucket: progressdb-backups", `bucket: ${e.bucket}`)
    .replaceAll("127.0.0.1:18080", `127.0.0.1:${e.servicePort}`)
    .replaceAll("/tmp/progressdb-local", e.root);
  if (version) text = text.replace(/^(\s*progressdb:version:\s*).*$/m, `$1"${version}"`);
  return text;
}

export function writeLocalStack(file: string, e: LocalEndpoints, version?: string): void {
  writeFileSync(file, renderLocalStack(e, version));
}
