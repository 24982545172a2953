import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    // Integration and e2e suites start real servers and the real engine on a
    // 2-core machine: one file at a time keeps their timings honest.
    fileParallelism: false,
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 300_000,
  },
});
