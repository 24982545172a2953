// A minimal YAML writer for the service config files we render: block maps and
// lists of maps, JSON-quoted strings (valid YAML double-quoted scalars, so
// durations and sizes stay string nodes, as 0.2.x requires), numbers, booleans
// and flow lists of strings.
export type YamlValue = string | number | boolean | readonly string[] | readonly YamlMap[] | YamlMap;
export interface YamlMap {
  readonly [key: string]: YamlValue | undefined;
}

const scalar = (v: string | number | boolean) => (typeof v === "string" ? JSON.stringify(v) : String(v));

export function renderYaml(map: YamlMap, indent = 0): string {
  const pad = " ".repeat(indent);
  const lines: string[] = [];
  for (const [key, value] of Object.entries(map)) {
    if (value === undefined) continue;
    if (Array.isArray(value) && value.length > 0 && typeof value[0] === "object") {
      lines.push(`${pad}${key}:`);
      for (const item of value as readonly YamlMap[]) {
        const body = renderYaml(item, indent + 4);
        lines.push(`${pad}  - ${body.trimStart()}`);
      }
    } else if (Array.isArray(value)) {
      lines.push(`${pad}${key}: [${(value as readonly string[]).map(scalar).join(", ")}]`);
    } else if (typeof value === "object") {
      lines.push(`${pad}${key}:`, renderYaml(value as YamlMap, indent + 2));
    } else {
      lines.push(`${pad}${key}: ${scalar(value as string | number | boolean)}`);
    }
  }
  return lines.join("\n");
}
