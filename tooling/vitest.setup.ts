import fc from "fast-check";

// Property tests are seeded by fast-check and report the seed on failure; keep CI time bounded.
fc.configureGlobal({ numRuns: Number(process.env.FC_NUM_RUNS ?? 100) });
