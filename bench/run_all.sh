#!/usr/bin/env bash
# Every benchmark with its default settings (≈ 20 minutes on the 2-core machine), one after the other;
# `bench/run_all.sh --smoke` runs each one's short version (≈ 4 minutes). Output: bench/results/raw/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/setup.sh
# audit.py's `regate matrix` / `diff` evaluate with OPA: the project's pinned build.
export REGATE_OPA_BIN="${REGATE_OPA_BIN:-$(scripts/ensure-opa)}"
mkdir -p bench/results/raw
log="bench/results/raw/run_all-$(date -u +%Y%m%dT%H%M%SZ).log"
smoke=()
[ "${1:-}" = "--smoke" ] && smoke=(--smoke)
for script in profile_request policy_scale streaming overhead limits; do
  echo "== bench/$script.py ${smoke[*]:-}" | tee -a "$log"
  (cd bench && ../.venv/bin/python "$script.py" "${smoke[@]}") 2>&1 | tee -a "$log"
done
audit_runs=(); [ -n "${smoke[*]:-}" ] && audit_runs=(--runs 1)
echo "== bench/audit.py ${audit_runs[*]:-}" | tee -a "$log"
(cd bench && ../.venv/bin/python audit.py "${audit_runs[@]}") 2>&1 | tee -a "$log"
echo "log: $log"
