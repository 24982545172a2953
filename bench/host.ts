// What the benchmark measures on the "host" (this machine, reached over the
// run's sshd like the program reaches it): a bare restart of the running
// release, and the raw backup pipeline the program's backup is compared with.
import path from "node:path";
import { runRemote, type SshdHandle } from "../tests/fixtures/sshd";
import type { MinioHandle } from "../tests/fixtures/minio";

const q = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

/**
 * Stops the service (SIGTERM to the pid in its pidfile, waits for the exit) and
 * starts the same release again with its own launcher (process mode, as the
 * program's install does), until /healthz answers: what an operator's restart
 * costs. Timed on the host with `date +%s%N`. Returns ms.
 */
export async function bareRestart(sshd: SshdHandle, installDir: string, serviceName: string, url: string): Promise<number> {
  const script = `set -eu
pidf=${q(path.join(installDir, "run", `${serviceName}.pid`))}
launcher=${q(path.join(installDir, "bin", `${serviceName}-launch`))}
log=${q(path.join(installDir, "logs", `${serviceName}.log`))}
[ -x "$launcher" ] || { echo "no launcher at $launcher (process mode expected)" >&2; exit 3; }
pid=$(cat "$pidf")
t0=$(date +%s%N)
kill -TERM "$pid"
while kill -0 "$pid" 2>/dev/null; do sleep 0.01; done
rm -f "$pidf"
setsid "$launcher" </dev/null >>"$log" 2>&1 &
n=0
until curl -fsS -o /dev/null --max-time 1 ${q(`${url}/healthz`)}; do
  n=$((n + 1)); [ "$n" -lt 3000 ] || { echo "not healthy 60 s after the restart" >&2; exit 4; }
  sleep 0.02
done
t1=$(date +%s%N)
echo $(( (t1 - t0) / 1000000 ))`;
  const r = await runRemote(sshd, script, { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`bare restart failed (${r.code}): ${r.stderr}`);
  return Number(r.stdout.trim());
}

/**
 * The raw pipeline: `tar -cf - <dbPath> | gzip | aws s3 cp - s3://…` to the same
 * MinIO endpoint and bucket, credentials on stdin (never argv). Timed on the host. Returns ms.
 */
export async function rawBackup(sshd: SshdHandle, minio: MinioHandle, dbPath: string, key: string): Promise<number> {
  const script = `set -eu
IFS== read -r _ AWS_ACCESS_KEY_ID; IFS== read -r _ AWS_SECRET_ACCESS_KEY; export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
t0=$(date +%s%N)
tar -C / -cf - -- ${q(dbPath.replace(/^\/+/, ""))} | gzip | /usr/bin/aws --endpoint-url ${q(minio.endpoint)} --region ${q(minio.region)} s3 cp - ${q(`s3://${minio.bucket}/${key}`)}
t1=$(date +%s%N)
echo $(( (t1 - t0) / 1000000 ))`;
  const stdin = `AWS_ACCESS_KEY_ID=${minio.accessKeyId}\nAWS_SECRET_ACCESS_KEY=${minio.secretAccessKey}\n`;
  const r = await runRemote(sshd, script, { stdin, timeoutMs: 1_800_000 });
  if (r.code !== 0) throw new Error(`raw backup failed (${r.code}): ${r.stderr}`);
  return Number(r.stdout.trim().split("\n").pop());
}
