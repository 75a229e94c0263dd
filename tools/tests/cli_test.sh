#!/usr/bin/env bash
# Tests of the pyro command-line tool, run by CTest: cli_test.sh PATH/TO/pyro WORK_DIR
# Each check prints "ok - ..." or "FAIL - ..."; the script ends with "N passed, N failed" and exits
# non-zero if any check failed.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pyro=$1
work=$2
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

source "$here/check_lib.sh"
# Canonical multiset of folded stacks: identical stacks summed, zero counts dropped, sorted.
canon() { awk '{ n = $NF; sub(/ [^ ]*$/, ""); sum[$0] += n } END { for (s in sum) if (sum[s] > 0) print s " " sum[s] }' "$@" | LC_ALL=C sort; }
same() { cmp -s "$1" "$2"; }

T0=1800000000  # 2027-01-15T08:00:00Z, a multiple of 10 s

# --- input: hand-written stacks (spaces, templates, interior self) and 400 random ones ------------
cat >in.folded <<'EOF'
main;ride_sharing::Server::run();handle_order;order_car(int);find_nearest_vehicle(int, std::string_view);check_driver_availability(int) 120
main;ride_sharing::Server::run();handle_order;order_car(int);find_nearest_vehicle(int, std::string_view) 45
main;ride_sharing::Server::run();handle_order;order_bike(int);find_nearest_vehicle(int, std::string_view);std::mutex::lock() 30
main;ride_sharing::Server::run() 7
start_thread;metrics_loop();std::this_thread::sleep_for<long, std::ratio<1l, 1000l> >(std::chrono::duration<long, std::ratio<1l, 1000l> > const&) 3
main 2
EOF
awk 'BEGIN { srand(7); for (i = 0; i < 400; i++) { d = 1 + int(rand() * 12); s = "root";
       for (j = 0; j < d; j++) s = s ";fn_" int(rand() * 30) "<T" int(rand() * 3) ">";
       print s " " (1 + int(rand() * 50)) } }' >>in.folded
canon in.folded >in.canon

# --- import -> query round trip ----------------------------------------------------------------
expect_exit "import-folded creates a file" 0 "appended" \
  "$pyro" import-folded in.folded -o a.pyro --app ride-sharing-app --tags region=eu-north,vehicle=car --at $T0
"$pyro" query a.pyro 'ride-sharing-app{}' --format folded >q.folded 2>q.err
canon q.folded >q.canon
check "query returns the imported multiset of stacks" same in.canon q.canon
check "query folded output is already canonical (one line per stack)" \
  bash -c "[[ \$(wc -l <q.folded) -eq \$(wc -l <q.canon) ]]"

# From standard input, with an ISO time, into the same file (a second series).
expect_exit "import-folded from stdin with an ISO time" 0 "2027-01-15T08:00:10Z" \
  bash -c "\"$pyro\" import-folded - -o a.pyro --app ride-sharing-app --tags region=eu-north,vehicle=bike --at 2027-01-15T08:00:17Z <in.folded"
"$pyro" query a.pyro 'ride-sharing-app{vehicle="bike"}' --format folded | canon >bike.canon
check "stdin import round trip" same in.canon bike.canon
"$pyro" query a.pyro 'ride-sharing-app{region="eu-north"}' --format folded | canon >both.canon
canon in.folded in.folded >double.canon
check "selector over both series sums them" same double.canon both.canon
expect_exit "appending into a sealed span is refused" 1 "sealed" \
  "$pyro" import-folded in.folded -o a.pyro --app ride-sharing-app --tags region=eu-north,vehicle=car --at $((T0 - 1000))

# --- time syntax: unix, ISO and relative give the same range -------------------------------------
"$pyro" query a.pyro '{}' --from $T0 --until $((T0 + 20)) --format folded | canon >unix.canon
"$pyro" query a.pyro '{}' --from 2027-01-15T08:00:00Z --until 2027-01-15T08:00:20Z --format folded | canon >iso.canon
check "ISO 8601 and unix ranges agree" same unix.canon iso.canon
check "the range holds both blocks" same double.canon unix.canon
"$pyro" query a.pyro '{}' --from $((T0 + 10)) --until $((T0 + 20)) --format folded | canon >second.canon
check "a one-block range holds only that block" same in.canon second.canon
"$pyro" query a.pyro '{}' --from now-1h --until now --format folded >rel.folded 2>rel.err
check "a relative range with no data is empty" bash -c "[[ ! -s rel.folded ]]"

# --- formats -------------------------------------------------------------------------------------
total=$(awk '{ s += $NF } END { print s }' in.folded)
"$pyro" query a.pyro 'ride-sharing-app{vehicle="car"}' --format timeline >tl.txt
check "timeline has the block's samples at its time" grep -qx "$T0 $total" tl.txt
"$pyro" query a.pyro 'ride-sharing-app{vehicle="car"}' --format table --top 3 >table.txt 2>table.err
check "table prints the merge count on stderr" grep -qE "stored trees merged" table.err
check "table has a header and 3 rows" bash -c "[[ \$(wc -l <table.txt) -eq 4 ]] && head -1 table.txt | grep -q function"
# The heaviest self function of the hand-written stacks is check_driver_availability (120) unless the
# random ones outweigh it; compute the expected first row from the input instead of assuming it.
expected_top=$(awk '{ n = $NF; sub(/ [^ ]*$/, ""); k = split($0, f, ";"); self[f[k]] += n }
  END { for (s in self) print self[s] "\t" s }' in.folded | LC_ALL=C sort -t$'\t' -k1,1nr -k2,2 | head -1 | cut -f2)
check "table's first row is the function with the most self samples" \
  bash -c "sed -n 2p table.txt | grep -qF -- \"$expected_top\""
"$pyro" query a.pyro 'ride-sharing-app{vehicle="car"}' --format json >fb.json 2>fb.err
check "json prints the merge count on stderr" grep -qE "stored trees merged" fb.err
# Decode the flamebearer (4 ints per node, x as a delta from the previous node's end on its level)
# back into folded stacks: it must give the input multiset, and numTicks/maxSelf must match.
cat >decode.js <<'EOF'
const fb = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8')).flamebearer;
const out = [];
const spans = fb.levels.map(level => {
  const nodes = []; let prevEnd = 0;
  for (let i = 0; i < level.length; i += 4) {
    const x = prevEnd + level[i];
    nodes.push({x, total: level[i + 1], self: level[i + 2], name: fb.names[level[i + 3]]});
    prevEnd = x + level[i + 1];
  }
  return nodes;
});
let maxSelf = 0;
function walk(depth, node, path) {
  if (depth > 0 && node.self > 0) out.push(path.join(';') + ' ' + node.self);
  if (depth > 0) maxSelf = Math.max(maxSelf, node.self);
  const next = spans[depth + 1] || [];
  let childSum = 0;
  for (const c of next) if (c.x >= node.x && c.x + c.total <= node.x + node.total) {
    childSum += c.total; walk(depth + 1, c, path.concat([c.name]));
  }
  if (childSum + node.self !== node.total) throw new Error('node ' + node.name + ': children + self != total');
}
walk(0, spans[0][0], []);
if (spans[0][0].total !== fb.numTicks) throw new Error('numTicks');
if (maxSelf !== fb.maxSelf) throw new Error('maxSelf ' + maxSelf + ' vs ' + fb.maxSelf);
console.log(out.join('\n'));
EOF
if command -v node >/dev/null; then
  node decode.js fb.json >fb.folded 2>fb.decode.err
  canon fb.folded >fb.canon
  check "json flamebearer decodes to the input multiset" same in.canon fb.canon
else
  fail "node is needed to check the json output (scripts/install-deps.sh installs it)"
fi
check "json names[0] is total and numTicks is the sample count" \
  bash -c "grep -q '\"names\":\[\"total\"' fb.json && grep -q '\"numTicks\":$total,' fb.json"
"$pyro" query a.pyro 'ride-sharing-app{vehicle="car"}' --top 5 >top.folded
top5=$(awk '{ print $NF }' in.canon | sort -nr | head -5 | awk '{ s += $1 } END { print s }')
check "--top 5 keeps the 5 heaviest stacks" bash -c "[[ \$(wc -l <top.folded) -eq 5 ]] && \
  [[ \$(awk '{ s += \$NF } END { print s }' top.folded) -eq $top5 ]]"
expect_exit "export-folded writes the selection" 0 "stored trees merged" \
  "$pyro" export-folded a.pyro 'ride-sharing-app{vehicle="car"}' -o exported.folded
canon exported.folded >exported.canon
check "export-folded equals the input" same in.canon exported.canon
expect_exit "export-folded -> import-folded -> same tree" 0 "appended" \
  "$pyro" import-folded exported.folded -o re.pyro --app again --at $T0
"$pyro" query re.pyro 'again' | canon >re.canon
check "re-imported export is the same multiset" same in.canon re.canon

# --- export to other tools' formats, and import of them ---------------------------------------------
expect_exit "export pprof" 0 "wrote car.pb.gz \\(pprof" \
  "$pyro" export a.pyro 'ride-sharing-app{vehicle="car"}' --format pprof -o car.pb.gz
check "the pprof is gzipped" bash -c "[[ \$(head -c 2 car.pb.gz | od -An -tx1 | tr -d ' ') == 1f8b ]]"
expect_exit "import the pprof back (told by its content)" 0 "car.pb.gz \\(pprof\\)" \
  "$pyro" import car.pb.gz -o frompprof.pyro --app back
"$pyro" query frompprof.pyro 'back{}' | canon >pprof.canon
check "pprof round trip keeps every stack and count" same in.canon pprof.canon
expect_exit "export speedscope" 0 "speedscope" \
  "$pyro" export a.pyro 'ride-sharing-app{vehicle="car"}' --format speedscope -o car.speedscope.json
check "the speedscope file names speedscope's schema" grep -qF 'speedscope.app/file-format-schema.json' car.speedscope.json
expect_exit "import the speedscope file back" 0 "speedscope" \
  "$pyro" import car.speedscope.json -o fromspeedscope.pyro --app back --at $T0
"$pyro" query fromspeedscope.pyro 'back{}' | canon >speedscope.canon
check "speedscope round trip keeps every stack and count" same in.canon speedscope.canon
expect_exit "export folded through export" 0 "folded" \
  "$pyro" export a.pyro 'ride-sharing-app{vehicle="car"}' --format folded -o car.folded
canon car.folded >car.canon
check "export --format folded equals the input" same in.canon car.canon
expect_exit "export to a format pyro does not write" 2 "expected pprof, speedscope or folded" \
  "$pyro" export a.pyro '{}' --format cpuprofile -o x.out

# --- slice: same totals over the sliced range ------------------------------------------------------
for i in $(seq 0 19); do
  t=$((T0 + 10 * i))
  awk -v k=$((i + 1)) '{ $NF = $NF * k; print }' in.folded >car.$i.folded
  head -n $((10 + i)) in.folded >bike.$i.folded
  "$pyro" import-folded car.$i.folded -o s.pyro --app app --tags vehicle=car --at $t 2>/dev/null || fail "import car $i"
  "$pyro" import-folded bike.$i.folded -o s.pyro --app app --tags vehicle=bike --at $t 2>/dev/null || fail "import bike $i"
done
"$pyro" import-folded in.folded -o s.pyro --app app --at $T0 2>/dev/null || fail "import untagged"
from=$((T0 + 50))
until=$((T0 + 150))
expect_exit "slice" 0 "wrote 1 series, 10 blocks" \
  "$pyro" slice s.pyro 'app{vehicle="car"}' --from $from --until $until -o slice.pyro
"$pyro" query s.pyro 'app{vehicle="car"}' --from $from --until $until | canon >orig.canon
"$pyro" query slice.pyro '{}' | canon >slice.canon
check "slice has the same stacks and totals as the range it came from" same orig.canon slice.canon
"$pyro" query s.pyro 'app{vehicle="car"}' --from $from --until $until --format timeline >orig.tl
"$pyro" query slice.pyro 'app' --from $from --until $until --format timeline >slice.tl
check "slice has the same timeline" same orig.tl slice.tl
"$pyro" info slice.pyro >slice.info
check "slice info: 1 series, 10 blocks" bash -c "grep -qE '^series +1$' slice.info && grep -qE '^blocks +10$' slice.info"
expect_exit "slice refuses to overwrite" 1 "already exists" \
  "$pyro" slice s.pyro 'app' --from $from --until $until -o slice.pyro
expect_exit "slice --force of the untagged series alone" 0 "wrote 1 series, 1 blocks" \
  "$pyro" slice s.pyro 'app{vehicle=""}' --from $T0 --until $until -o slice.pyro --force
"$pyro" query slice.pyro 'app' | canon >untagged.canon
check "slice of app{} without tags holds only the untagged series" same in.canon untagged.canon
expect_exit "slice needs --from and --until" 2 "--from and --until are required" \
  "$pyro" slice s.pyro 'app' -o other.pyro

# --- merge: series of both inputs; blocks at the same time summed ---------------------------------
for i in 0 1 2 3 4; do
  "$pyro" import-folded car.$i.folded -o m1.pyro --app app --tags vehicle=car --at $((T0 + 10 * i)) 2>/dev/null
  "$pyro" import-folded bike.$i.folded -o m2.pyro --app app --tags vehicle=car --at $((T0 + 10 * (i + 2))) 2>/dev/null
  "$pyro" import-folded bike.$i.folded -o m2.pyro --app other --tags host=b --at $((T0 + 10 * i)) 2>/dev/null
done
expect_exit "merge" 0 "wrote 2 series, 12 blocks" "$pyro" merge m1.pyro m2.pyro -o merged.pyro
for sel in 'app{vehicle="car"}' 'other'; do
  cat <("$pyro" query m1.pyro "$sel") <("$pyro" query m2.pyro "$sel") | canon >sum.canon
  "$pyro" query merged.pyro "$sel" | canon >merged.canon
  check "merge keeps the samples of $sel" same sum.canon merged.canon
done
"$pyro" query merged.pyro 'app' --from $((T0 + 20)) --until $((T0 + 30)) | canon >overlap.canon
canon car.2.folded bike.0.folded >overlap.expected
check "merge sums blocks of one series at the same time" same overlap.expected overlap.canon
"$pyro" query merged.pyro 'app' --format timeline >merged.tl
check "merged timeline has 7 blocks in time order" \
  bash -c "[[ \$(awk '\$2 > 0' merged.tl | wc -l) -eq 7 ]] && sort -n -c merged.tl"
"$pyro" info merged.pyro >merged.info
check "merged info lists both apps and the tag values" \
  bash -c "grep -qE '^  app  \(cpu\)$' merged.info && grep -qE '^  other  \(cpu\)$' merged.info && grep -qE 'host: b' merged.info"

# --- info -----------------------------------------------------------------------------------------
"$pyro" info a.pyro >info.txt
check "info shows the span in ISO and unix" grep -qF "2027-01-15T08:00:00Z .. 2027-01-15T08:00:20Z ($T0 .. $((T0 + 20))" info.txt
check "info lists tag keys and values" grep -qE "vehicle: bike, car" info.txt
check "info lists blocks and samples per series" grep -qF "ride-sharing-app.cpu{region=\"eu-north\",vehicle=\"car\"}  (1 block, $total samples)" info.txt

# --- usage errors: exit 2 with a message -----------------------------------------------------------
expect_exit "no command" 2 "usage" "$pyro"
expect_exit "unknown command" 2 "unknown command 'frobnicate'" "$pyro" frobnicate
expect_exit "unknown option" 2 "unknown option '--bogus'" "$pyro" query a.pyro '{}' --bogus
expect_exit "option without its value" 2 "option --from needs a value" "$pyro" query a.pyro '{}' --from
expect_exit "bad format" 2 "--format 'xml'" "$pyro" query a.pyro '{}' --format xml
expect_exit "bad time" 2 "time 'yesterday'" "$pyro" query a.pyro '{}' --from yesterday
expect_exit "impossible date" 2 "2026-02-30" "$pyro" query a.pyro '{}' --from 2026-02-30T00:00:00Z
expect_exit "bad relative time" 2 "now-1y" "$pyro" query a.pyro '{}' --from now-1y
expect_exit "empty range" 2 "empty time range" "$pyro" query a.pyro '{}' --from $T0 --until $T0
expect_exit "bad selector" 2 "selector 'app\{vehicle=' " "$pyro" query a.pyro 'app{vehicle='
expect_exit "missing selector" 2 "missing selector" "$pyro" query a.pyro slice.pyro
expect_exit "import without --app names the application after the file" 0 "series .in.cpu" \
  "$pyro" import in.folded -o named.pyro --at $T0
expect_exit "import with a bad tag" 2 "tag 'novalue'" "$pyro" import-folded in.folded -o x.pyro --app a --tags novalue
expect_exit "--top on json" 2 "--top applies" "$pyro" query a.pyro '{}' --format json --top 3
expect_exit "merge into an input" 2 "is also an input" "$pyro" merge m1.pyro m2.pyro -o m1.pyro --force
expect_exit "help for a command" 0 "" "$pyro" help slice
check "help lists every command" bash -c "\"$pyro\" help | grep -q import-folded && \"$pyro\" help | grep -q export-folded"

# --- data errors: exit 1 with a message naming the problem ------------------------------------------
printf 'this is not a pyro file, just some text that is long enough to look like a header\n' >bad.pyro
expect_exit "garbage file" 1 "bad.pyro: " "$pyro" info bad.pyro
cp a.pyro flipped.pyro
printf 'XXXX' | dd of=flipped.pyro bs=1 seek=0 conv=notrunc 2>/dev/null
expect_exit "file with a damaged header" 1 "flipped.pyro: " "$pyro" query flipped.pyro '{}'
expect_exit "missing file" 1 "nothere.pyro" "$pyro" info nothere.pyro
printf 'a;b;c 3\na;b notanumber\n' >badline.folded
expect_exit "malformed folded line, --strict" 1 "line 2" "$pyro" import-folded badline.folded -o x.pyro --app a --strict
check "a failed import does not create the output" bash -c "[[ ! -e x.pyro ]]"
expect_exit "malformed folded line, lenient by default: skipped and counted" 0 "skipped 1: line 2 no count" \
  "$pyro" import badline.folded -o lenient.pyro --app a
printf '\n\n' >empty.folded
expect_exit "empty input" 1 "not a profile format" "$pyro" import-folded empty.folded -o x.pyro --app a
expect_exit "a .pyro is not imported" 1 "pyro merge" "$pyro" import a.pyro -o x.pyro
# A torn tail (an interrupted write) is not an error: the complete records are read.
cp a.pyro torn.pyro
printf 'torn tail bytes' >>torn.pyro
expect_exit "torn tail is cut off" 0 "" "$pyro" info torn.pyro

# export-html (the share file itself is opened in Chromium by tests/browser/viewer.test.js).
expect_exit "export-html without the viewer's folder" 2 "--viewer DIR is required" \
  env -u PYROSCOPE_VIEWER_DIR "$pyro" export-html a.pyro '{}' -o share.html
expect_exit "export-html with a folder that holds no viewer" 1 "index.html.*build-wasm.sh" \
  "$pyro" export-html a.pyro '{}' --viewer . -o share.html
expect_exit "export-html with a bad view" 2 "--view 'sideways'" \
  "$pyro" export-html a.pyro '{}' --view sideways --viewer . -o share.html
check "a failed export leaves no file" bash -c "[[ ! -e share.html && ! -e share.html.tmp ]]"

finish
