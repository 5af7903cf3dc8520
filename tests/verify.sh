#!/usr/bin/env bash
# Verify a running credit-risk service: /health, /model/info (Production), one /predict with
# its decision, probability, credit score and reason codes.
# Usage: tests/verify.sh [URL]   (default $SERVICE_URL, else http://127.0.0.1:3000)
# A service with API keys: the key in $CREDIT_RISK_API_KEY (sent as Authorization: Bearer).
set -euo pipefail
url="${1:-${SERVICE_URL:-http://127.0.0.1:3000}}"
url="${url%/}"
sample='{"RevolvingUtilizationOfUnsecuredLines": 0.35, "age": 45,
  "NumberOfTime30_59DaysPastDueNotWorse": 0, "DebtRatio": 0.3, "MonthlyIncome": 5400,
  "NumberOfOpenCreditLinesAndLoans": 8, "NumberOfTimes90DaysLate": 0,
  "NumberRealEstateLoansOrLines": 1, "NumberOfTime60_89DaysPastDueNotWorse": 0,
  "NumberOfDependents": null}'

# field PATH: print a dotted field (e.g. .prediction_log.ok) of the JSON on stdin.
if command -v jq >/dev/null 2>&1; then
  field() { jq -rc "$1"; }
else
  field() {
    python3 -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].strip(".").split("."):
    value = value.get(key) if isinstance(value, dict) else None
print("null" if value is None else json.dumps(value).strip("\""))' "$1"
  }
fi

# key_header: the Authorization header for curl's -H @FILE (no key on the command line).
key_header() { [[ -z ${CREDIT_RISK_API_KEY:-} ]] || printf 'Authorization: Bearer %s\n' "$CREDIT_RISK_API_KEY"; }

fail() { echo "verify: FAIL: $*" >&2; exit 1; }

health=$(curl -sS --max-time 10 "$url/health") || fail "GET $url/health: no answer"
status=$(field .status <<<"$health")
[[ $status == ok || $status == degraded ]] || fail "/health status is $status: $health"
[[ $(field .model_loaded <<<"$health") == true ]] || fail "/health: model not loaded: $health"
echo "verify: /health $status, model version $(field .model_version <<<"$health")"

info=$(curl -fsS --max-time 10 -H @<(key_header) "$url/model/info") || fail "GET $url/model/info failed"
stage=$(field .model_stage <<<"$info")
[[ $stage == Production ]] || fail "/model/info model_stage is $stage, not Production"
echo "verify: /model/info $(field .model_name <<<"$info") v$(field .model_version <<<"$info") $stage"

answer=$(curl -fsS --max-time 10 -H @<(key_header) -H 'Content-Type: application/json' -d "$sample" \
  "$url/predict") || fail "POST $url/predict failed"
prediction=$(field .prediction <<<"$answer")
[[ $prediction == 0 || $prediction == 1 ]] || fail "/predict gave no prediction: $answer"
score=$(field .score <<<"$answer")
[[ $score =~ ^[0-9]+$ ]] || fail "/predict gave no credit score: $answer"
reasons=$(field .reasons <<<"$answer")
[[ $reasons == \[* ]] || fail "/predict gave no reasons list: $answer"
echo "verify: /predict prediction $prediction, probability $(field .probability <<<"$answer"), score $score, reasons $reasons"
