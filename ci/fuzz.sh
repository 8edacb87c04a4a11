#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo-afl, AFL++) for a bounded time each, starting from the
# seed corpus in fuzz/corpus/TARGET/, and fails if any target crashed. Prints, per target, the
# executions, the edges covered and the crashes and hangs found.
#
#   ci/fuzz.sh [--seconds N] [--target NAME]... [--out DIR]
#   ci/fuzz.sh --build-only     the instrumented build alone (ci/test.sh runs it beside the suite)
#
# N defaults to 60 (per target). Findings stay in DIR (default: a fresh temporary directory),
# DIR/TARGET/default/crashes/ holding each crashing input: keep it beside the code as a
# regression test and fix the cause. Needs cargo-afl (`cargo install cargo-afl`), which builds
# its own AFL++ on first use. The instrumented build is long the first time (every dependency
# of image-builder and coordination); KEEL_FUZZ_TARGET_DIR keeps it somewhere that outlives a
# fresh clone (default: fuzz/target).
set -euo pipefail

seconds=60
out=""
only=()
build_only=0
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    --target) only+=("$2"); shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --build-only) build_only=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "ci/fuzz.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "ci/fuzz.sh: --seconds wants a positive integer, got $seconds" >&2; exit 2; }

cd "$(dirname "$0")/../fuzz"
export CARGO_TARGET_DIR="${KEEL_FUZZ_TARGET_DIR:-$PWD/target}"
bin="$CARGO_TARGET_DIR/release"
if ! cargo afl --version >/dev/null 2>&1; then
  echo "ci/fuzz.sh: cargo-afl is missing: cargo install --locked cargo-afl" >&2
  exit 10
fi

echo "ci/fuzz.sh: building the targets (cargo afl build --release)" >&2
cargo afl build --release --bins 2>&1 | tail -n 3 >&2
((build_only)) && exit 0

if ((${#only[@]})); then
  targets=("${only[@]}")
else
  targets=()
  for f in src/bin/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
[[ -n "$out" ]] || out="$(mktemp -d /tmp/keel-fuzz.XXXXXX)"
mkdir -p "$out"

# No UI; don't ask for CPU governor or core_pattern changes on a shared machine; no pinning.
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
export AFL_NO_WARN_INSTABILITY=1

stat_of() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$2"; }
count_findings() {
  find "$1" -maxdepth 1 -type f ! -name README.txt 2>/dev/null | wc -l
}

failed=()
printf '%-18s %12s %10s %8s %8s %8s\n' target executions execs/s edges crashes hangs
for t in "${targets[@]}"; do
  [[ -d "corpus/$t" && -x "$bin/$t" ]] || {
    echo "ci/fuzz.sh: no target $t (fuzz/src/bin/$t.rs and fuzz/corpus/$t/)" >&2
    failed+=("$t")
    continue
  }
  rm -rf "${out:?}/$t"
  if ! timeout --kill-after=30 $((seconds + 120)) \
      cargo afl fuzz -V "$seconds" -t 2000 -i "corpus/$t" -o "$out/$t" -- "$bin/$t" \
      >"$out/$t.log" 2>&1; then
    echo "ci/fuzz.sh: afl-fuzz failed on $t; the end of $out/$t.log:" >&2
    tail -n 25 "$out/$t.log" >&2
    failed+=("$t")
    continue
  fi
  stats="$out/$t/default/fuzzer_stats"
  crashes=$(count_findings "$out/$t/default/crashes")
  hangs=$(count_findings "$out/$t/default/hangs")
  printf '%-18s %12s %10s %8s %8s %8s\n' "$t" "$(stat_of execs_done "$stats")" \
    "$(stat_of execs_per_sec "$stats")" "$(stat_of edges_found "$stats")" "$crashes" "$hangs"
  if ((crashes > 0)); then
    failed+=("$t")
    for c in "$out/$t/default/crashes"/id*; do echo "  crash: $c" >&2; done
  fi
done

if ((${#failed[@]})); then
  echo "ci/fuzz.sh: FAILED: ${failed[*]} (findings in $out)" >&2
  exit 1
fi
echo "ci/fuzz.sh: ${#targets[@]} targets, ${seconds} s each, no crashes (findings in $out)"
