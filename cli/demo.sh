#!/usr/bin/env bash
# `make demo`: several `bext-lock run sqlite ...` processes start at once
# against one temporary database, round after round; each round exactly one
# of them runs the job and the others skip (exit 75).
#
# Usage: cli/demo.sh [BIN_DIR] [WORKERS] [ROUNDS]   (BIN_DIR holds bext-lock and the plugins)
set -euo pipefail

bin_dir=${1:-target/debug}
workers=${2:-4}
rounds=${3:-3}
lock="$bin_dir/bext-lock"
[ -x "$lock" ] || { echo "demo: $lock is missing; run 'make demo'" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bext-lock-demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
db="$tmp/locks.db"
config="{\"path\":\"$db\"}"

echo "bext-lock demo: $workers workers per round, one SQLite file, key reports/nightly"
echo "  each worker runs: bext-lock run sqlite --config '{\"path\":\"$db\"}' \\"
echo "                      --key reports/nightly --ttl 10s -- <the job>"
failed=0
for round in $(seq 1 "$rounds"); do
  pids=()
  for w in $(seq 1 "$workers"); do
    (
      # The job: say who ran it with which fence, and take a moment so the
      # other workers find the lock held.
      set +e
      "$lock" run sqlite --config "$config" --key reports/nightly --ttl 10s -- \
        sh -c 'echo "$BEXT_LOCK_FENCE" > "$0"; sleep 1' "$tmp/ran.$round.$w"
      echo $? > "$tmp/exit.$round.$w"
    ) &
    pids+=($!)
  done
  wait "${pids[@]}"

  ran=() skipped=() other=()
  for w in $(seq 1 "$workers"); do
    code=$(cat "$tmp/exit.$round.$w")
    case "$code" in
      0) ran+=("$w") ;;
      75) skipped+=("$w") ;;
      *) other+=("worker $w exited $code") ;;
    esac
  done
  if [ ${#ran[@]} -eq 1 ]; then
    fence=$(cat "$tmp/ran.$round.${ran[0]}")
    echo "round $round: worker ${ran[0]} ran the job (fence $fence); workers ${skipped[*]} skipped (exit 75)"
  else
    echo "round $round: ${#ran[@]} workers ran the job (${ran[*]:-none}); expected exactly one"
    failed=1
  fi
  if [ ${#other[@]} -gt 0 ]; then
    echo "round $round: ${other[*]}"
    failed=1
  fi
done

if [ "$failed" -eq 0 ]; then
  echo "every round ran the job exactly once"
else
  echo "demo FAILED" >&2
  exit 1
fi
