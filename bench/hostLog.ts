// Follows the host's upgrade log (installDir/logs/upgrade.log, where every host
// script writes `<UTC time> [<script>] <message>`) while an update runs, and
// stamps each new line with the time it appeared (the log's own times are whole
// seconds). The benchmark uses it for one thing: the time a backup step spent
// waiting for another step (a line saying "waiting", until that script's next
// line), which is not backup work.
import { closeSync, openSync, readSync, statSync } from "node:fs";

export interface LogLine {
  at: number;
  script: string;
  text: string;
}

export interface LogTail {
  stop(): LogLine[];
}

export function tailLog(file: string, pollMs = 20): LogTail {
  // Only what is written from now on.
  let offset = statSync(file, { throwIfNoEntry: false })?.size ?? 0;
  let pending = "";
  const lines: LogLine[] = [];
  const buf = Buffer.alloc(1 << 16);
  const poll = () => {
    let fd: number;
    try {
      fd = openSync(file, "r");
    } catch {
      return;
    }
    try {
      for (let n = readSync(fd, buf, 0, buf.length, offset); n > 0; n = readSync(fd, buf, 0, buf.length, offset)) {
        offset += n;
        pending += buf.toString("utf8", 0, n);
      }
    } finally {
      closeSync(fd);
    }
    const parts = pending.split("\n");
    pending = parts.pop() ?? "";
    const now = Date.now();
    for (const p of parts) {
      const m = /^\S+ \[([^\]]+)\] (.*)$/.exec(p);
      if (m) lines.push({ at: now, script: m[1], text: m[2] });
    }
  };
  const timer = setInterval(poll, pollMs);
  return {
    stop() {
      clearInterval(timer);
      poll();
      return lines;
    },
  };
}

/** ms that scripts matching `scripts` spent waiting: from a line saying "waiting" to that script's next line. */
export function waitingMs(lines: LogLine[], scripts: RegExp): number {
  let total = 0;
  lines.forEach((l, i) => {
    if (!scripts.test(l.script) || !/\bwaiting\b/i.test(l.text)) return;
    const next = lines.slice(i + 1).find((n) => n.script === l.script);
    if (next) total += next.at - l.at;
  });
  return total;
}
