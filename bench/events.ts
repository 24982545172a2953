// `pulumi up --json` streams the engine's events, one JSON object a line, as
// they happen. Each is stamped with the time it arrived (their own timestamps
// are whole seconds), so each step's wall time is known to a few ms: a step
// runs from its resourcePreEvent to its resOutputsEvent (or resOpFailedEvent).
import { spawn } from "node:child_process";
import type { PulumiStack } from "../scripts/lib/pulumiCli";

interface EngineEvent {
  resourcePreEvent?: { metadata: { urn: string; op: string } };
  resOutputsEvent?: { metadata: { urn: string; op: string } };
  resOpFailedEvent?: { metadata: { urn: string; op: string } };
  diagnosticEvent?: { severity: string; message: string; urn?: string };
}

export interface StepTime {
  urn: string;
  op: string;
  startMs: number;
  endMs: number;
}

export interface UpResult {
  code: number;
  ms: number;
  steps: StepTime[];
  /** The error diagnostics, for a failed update. */
  errors: string[];
}

/** `pulumi up --yes --skip-preview --json` on the stack; step times from its event stream. */
export function upWithSteps(stack: PulumiStack, stackName: string): Promise<UpResult> {
  const args = ["up", "--yes", "--skip-preview", "--json", "--non-interactive", "--cwd", stack.projectDir, "--stack", stackName];
  const started = new Map<string, number>();
  const steps: StepTime[] = [];
  const errors: string[] = [];
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn("pulumi", args, { env: stack.environment, stdio: ["ignore", "pipe", "pipe"] });
    let pending = "";
    let stderr = "";
    const onLine = (line: string, now: number) => {
      if (!line.startsWith("{")) return;
      let e: EngineEvent;
      try {
        e = JSON.parse(line) as EngineEvent;
      } catch {
        return;
      }
      const pre = e.resourcePreEvent?.metadata;
      if (pre && pre.op !== "same" && !started.has(pre.urn + pre.op)) started.set(pre.urn + pre.op, now);
      const done = (e.resOutputsEvent ?? e.resOpFailedEvent)?.metadata;
      const at = done && started.get(done.urn + done.op);
      if (done && at !== undefined) steps.push({ urn: done.urn, op: done.op, startMs: at, endMs: now });
      if (e.diagnosticEvent?.severity === "error") errors.push(e.diagnosticEvent.message);
    };
    child.stdout.on("data", (chunk: Buffer) => {
      const now = Date.now();
      const lines = (pending + chunk.toString()).split("\n");
      pending = lines.pop() ?? "";
      for (const l of lines) onLine(l, now);
    });
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      onLine(pending, Date.now());
      if (stderr.trim()) errors.push(stderr.trim());
      resolve({ code: code ?? -1, ms: Date.now() - t0, steps, errors });
    });
  });
}
