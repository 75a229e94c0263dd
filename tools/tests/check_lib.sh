# Shared by the tools' shell tests (source it after setting $work and cd'ing there): each check prints
# "ok - ..." or "FAIL - ..."; the script ends with `finish`, which prints "N passed, N failed" and
# exits non-zero if any check failed.
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1"; }
check() {  # check NAME COMMAND...: passes when the command succeeds
  local name=$1
  shift
  if "$@"; then ok "$name"; else fail "$name"; fi
}
# expect_exit NAME CODE STDERR_PATTERN COMMAND...: the exit code and a message on stderr; the
# command's output stays in $work/last.out and $work/last.err
expect_exit() {
  local name=$1 code=$2 pattern=$3
  shift 3
  "$@" >"$work/last.out" 2>"$work/last.err"
  local rc=$?
  if [[ $rc -ne $code ]]; then
    fail "$name: exit $rc, expected $code (stderr: $(head -c 400 "$work/last.err"))"
  elif [[ -n $pattern ]] && ! grep -qE -- "$pattern" "$work/last.err"; then
    fail "$name: stderr does not match /$pattern/: $(head -c 400 "$work/last.err")"
  else
    ok "$name"
  fi
}
finish() {
  echo "$passed passed, $failed failed"
  [[ $failed -eq 0 ]]
  exit
}
