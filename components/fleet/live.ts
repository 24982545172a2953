// The version an instance answers with right now (0.2.x: /readyz; 0.1.x has none). Read at program
// time for a fleet: a rollout that failed part-way wrote no outputs, so the stack's outputs can be
// behind what the first instances already run, and the downgrade guard must see what runs.
import type { Settings } from "../config";
import { field, parseJson, request } from "../health/http";

export async function liveVersion(s: Settings): Promise<string | undefined> {
  const base = s.health.url.endsWith("/") ? s.health.url : `${s.health.url}/`;
  try {
    const { res } = await request({ url: new URL("readyz", base), method: "GET", headers: { ...s.health.headers }, timeoutMs: 2000, caCertPem: s.health.caCertPem });
    const json = res.status === 200 ? parseJson(res.body) : undefined;
    const version = json?.ok ? field(json.value, "version") : undefined;
    return typeof version === "string" && version !== "" ? version.replace(/^v/, "") : undefined;
  } catch {
    return undefined;
  }
}
