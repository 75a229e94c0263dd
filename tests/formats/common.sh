# Shared by the format tests: check NAME COMMAND... runs a command, counts it as passed or failed and
# prints why; skip NAME REASON records a check that could not run here (it never counts as passed).
passed=0
failed=0
skipped=0
check() {
  local name=$1
  shift
  local output
  if output=$("$@" 2>&1); then
    passed=$((passed + 1))
    echo "ok   $name${output:+: ${output//$'\n'/$'\n'     }}"
  else
    failed=$((failed + 1))
    echo "FAIL $name: ${output//$'\n'/$'\n'     }"
  fi
}
skip() {
  skipped=$((skipped + 1))
  echo "SKIP $1: $2"
}
finish() {
  echo "$passed passed, $failed failed, $skipped skipped"
  if ((failed > 0)); then exit 1; fi
  # Everything that ran passed, but a check was skipped: CTest reports the test as skipped (exit 77),
  # so a machine without perf is never counted as a pass.
  if ((skipped > 0)); then exit 77; fi
  exit 0
}
# same_text A B: the two commands print the same text (a diff when not).
same_text() {
  diff <(eval "$1") <(eval "$2")
}
