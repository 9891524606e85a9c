# shellcheck shell=bash
# The --check mode of the bench scripts (sourced, not run): runs the script ($1, with the rest
# as its arguments) as usual, then fails if any budget line says "not met". For a manual or
# scheduled check; not part of CI: timings depend on the machine.
run_checked() {
  local script=$1 log status=0
  shift
  log=$(mktemp)
  "$script" "$@" | tee "$log" || status=$?
  if [ "$status" -ne 0 ]; then
    rm -f "$log"
    return "$status"
  fi
  if grep -q "not met" "$log"; then
    echo "check: a budget is not met:" >&2
    grep "not met" "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
  echo "check: every budget met"
}
