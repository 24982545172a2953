// The HealthCheck's pure logic now lives in ./health/ (one file per concern;
// see ./health/index.ts for the serialization rules). This path re-exports it.
export * from "./health";
