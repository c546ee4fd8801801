#!/usr/bin/env bash
# ./dev test: install, build, lint, typecheck, then every package's tests against real servers,
# then one summary table and the totals line `tests: N passed, N failed`. Exits non-zero if
# anything failed. CI runs exactly this (see .ci/run).
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bootstrap.sh
source tooling/bootstrap.sh
export TURBO_TELEMETRY_DISABLED=1 TURBO_NO_UPDATE_NOTIFIER=1 NO_COLOR=1 FORCE_COLOR=0

step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
fail() {
  echo "FAILED: $1" >&2
  # CI reads the last line: say plainly that nothing was tested past the failed step.
  echo "tests: 0 passed, 1 failed"
  exit 1
}

started=$(date +%s)
step "install dependencies"
pnpm install --frozen-lockfile --reporter=append-only || fail "pnpm install"
step "install test servers"
node tooling/test-servers/src/install.ts || fail "installing the test servers"
step "build"
pnpm turbo run build --output-logs=errors-only || fail "build"
# Lint and typecheck failures don't stop the run: the tests still run, so one run shows
# everything; each failed step counts as a failure in the totals line.
failed_steps=()
step "lint (biome, publint, are-the-types-wrong)"
pnpm run lint || failed_steps+=(--failed-step lint)
step "typecheck"
pnpm turbo run typecheck --output-logs=errors-only || failed_steps+=(--failed-step typecheck)
step "tests"
rm -rf .reports
# Every package's tests run even when one fails, so the summary shows all of them.
pnpm turbo run test --continue --concurrency="${SAYIIR_TEST_CONCURRENCY:-2}" --output-logs=full
turbo_status=$?
# The benchmark's quick variant proves the harness still works: it fails only if a correctness
# check (every task completed exactly once) fails, never because a speed target is missed.
step "benchmark, quick variant"
pnpm bench --quick || failed_steps+=(--failed-step "bench --quick")
step "summary ($(( $(date +%s) - started )) s in all)"
node tooling/test-servers/src/summary.ts "${failed_steps[@]}"
summary_status=$?
if [ "$turbo_status" -ne 0 ] && [ "$summary_status" -eq 0 ]; then
  echo "turbo reported a failing test task that the summary did not count" >&2
  exit 1
fi
exit "$summary_status"
