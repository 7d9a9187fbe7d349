#!/usr/bin/env bash
# `make soak [N=10]`: N consecutive runs of the whole kernel test suite (FUSEWB_REQUIRE_KERNEL=1)
# and of `make demo`, in one fresh clone of this repository's HEAD, then each test's pass count.
# A test that does not pass N times in N is flaky: a bug to find, not to retry around.
# SOAK_LOCK=FILE takes flock(FILE) around each run, to share the machine with others who do.
set -uo pipefail
n=${1:-10}
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/fusewb-soak.XXXXXX)
chmod 755 "$work"  # tests run fusewb as an unprivileged user too: the clone must be readable
echo "soak: $n runs of 'make test' and 'make demo' in a fresh clone at $work/clone"
git clone -q "$top" "$work/clone" || { echo "soak: git clone failed" >&2; exit 2; }
cd "$work/clone" || exit 2
locked() { if [ -n "${SOAK_LOCK:-}" ]; then flock "$SOAK_LOCK" "$@"; else "$@"; fi; }
make -s setup < /dev/null || exit 2
for i in $(seq 1 "$n"); do
  start=$(date +%s)
  FUSEWB_REQUIRE_KERNEL=1 locked make -s test \
    PYTEST_ARGS="-q -p no:cacheprovider --junitxml=$work/test-$i.xml" < /dev/null > "$work/test-$i.log" 2>&1
  test_rc=$?
  echo "$test_rc" > "$work/test-$i.rc"
  for xml in build/test-results/junit-*.xml; do  # the guest stage's results, one file per kernel
    [ -e "$xml" ] && [ "$xml" != "build/test-results/junit-$(uname -r).xml" ] && \
      mv "$xml" "$work/test-$i-$(basename "$xml" .xml | sed 's/^junit-//').xml"
  done
  locked make -s demo DEMO_OUT="$work/demo-$i" < /dev/null > "$work/demo-$i.log" 2>&1
  demo_rc=$?
  echo "soak: run $i/$n: make test exit $test_rc ($(tail -n 1 "$work/test-$i.log")), make demo exit $demo_rc, $(( $(date +%s) - start )) s"
done
python3 "$top/scripts/soak_report.py" "$work" "$n"
