// The ServiceProbe's look at the live service, made when the engine diffs it
// (every preview and up): is the configured version the one answering? A
// drift (the service down, or another version answering, e.g. after the
// continuity gate reverted an upgrade) makes the probe "replace", which gives
// the upgrade chain a new run key, so `pulumi up` redoes it. Serialized into
// the provider: see ./index.ts for the rules.
import { displayUrl, errorMessage, field, parseJson, request } from "./http";

export interface ProbeOptions {
  url: string;
  expectedVersion: string;
  /** "readyz": /readyz must report the version; "host" (0.1.x, no /readyz): /healthz ok and /readyz 401/404. */
  versionProofMode: string;
  headers?: Record<string, string>;
  caCertPem?: string;
  timeoutMs?: number;
}

export interface ProbeResult {
  ok: boolean;
  /** What answered, in operator terms. */
  seen: string;
}

export async function probeService(o: ProbeOptions): Promise<ProbeResult> {
  const base = new URL(o.url);
  const get = async (path: string) => {
    const url = new URL(path, base.href.endsWith("/") ? base : new URL(`${base.href}/`));
    try {
      return (await request({ url, method: "GET", headers: { ...(o.headers ?? {}) }, timeoutMs: o.timeoutMs ?? 3000, caCertPem: o.caCertPem })).res;
    } catch (e) {
      return { status: 0, headers: {}, body: errorMessage(e), truncated: false };
    }
  };
  const health = await get("healthz");
  if (health.status !== 200) {
    return { ok: false, seen: `${displayUrl(base)} does not answer /healthz (${health.status === 0 ? health.body : `HTTP ${health.status}`})` };
  }
  const ready = await get("readyz");
  const want = o.expectedVersion.replace(/^v/, "");
  if (ready.status === 200) {
    const json = parseJson(ready.body);
    const version = json.ok ? field(json.value, "version") : undefined;
    const seen = typeof version === "string" ? version.replace(/^v/, "") : "";
    if (o.versionProofMode === "readyz" && seen === want) return { ok: true, seen: `/readyz reports ${version}` };
    return { ok: false, seen: `/readyz reports ${JSON.stringify(version ?? null)}, not ${want}` };
  }
  if (o.versionProofMode === "host" && (ready.status === 401 || ready.status === 404)) {
    return { ok: true, seen: `a release without /readyz answers (HTTP ${ready.status}), as ${want} does` };
  }
  return { ok: false, seen: `/readyz answered HTTP ${ready.status}` };
}
