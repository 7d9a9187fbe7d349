#!/usr/bin/env bash
# make dist: the artifacts for a host that runs fusewb but does not develop it, into OUT (dist/):
#   fusewb-VERSION.tar.gz, fusewb-VERSION-py3-none-any.whl   sdist and wheel (the BPF C as package data)
#   wheelhouse/      the wheel and the binary wheels of its core dependencies, for this Python and
#                    machine (PYZ_PYTHON=3.12: for CPython 3.12 on this machine's architecture):
#                    pip install --no-index --find-links wheelhouse fusewb
#   fusewb-VERSION-pyTAG-ARCH.pyz   one file: the wheelhouse as a zipapp (shiv), run with python3;
#                    it unpacks once into ~/.shiv (SHIV_ROOT), then starts from there
# bcc is in none of them: it comes from the distribution (README, "On a production host"). The
# kernel headers bcc compiles fusewb's program against are: bpf/kernel-include/, copied from this
# machine's header tree by scripts/bundle_headers.py, for hosts with no headers of their own.
# Needs the virtualenv of make setup (build and shiv come with .[test]); pip reads PyPI or its cache.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-dist}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
version=$("$PY" -c "import fusewb; print(fusewb.__version__)")
target=${PYZ_PYTHON:-$("$PY" -c "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')")}
arch=$(uname -m)
tag="py${target/./}-$arch"
# pip's options for the target's binary wheels (manylinux: glibc 2.17 and later, the tags PyPI has)
platform=(--only-binary=:all: --implementation cp --python-version "$target"
          --platform "manylinux_2_28_$arch" --platform "manylinux_2_27_$arch"
          --platform "manylinux_2_24_$arch" --platform "manylinux2014_$arch" --platform "linux_$arch")
rm -rf "$OUT/wheelhouse" "$OUT"/fusewb-"$version"*
"$PY" scripts/bundle_headers.py bpf/kernel-include 2>"$OUT/bundle.log" | sed 's/^/make dist: /' || {
  tail -20 "$OUT/bundle.log" >&2; echo "make dist: bundling the kernel headers failed (log above)" >&2; exit 2; }
rm -f "$OUT/bundle.log"

# sdist, then the wheel from the sdist (proves the sdist is complete); no isolation: the build
# back end is the virtualenv's setuptools (make setup), so no index is needed for this step
"$PY" -m build --no-isolation --outdir "$OUT" . >"$OUT/build.log" 2>&1 || {
  tail -20 "$OUT/build.log" >&2; echo "make dist: python -m build failed (log above)" >&2; exit 2; }
rm -f "$OUT/build.log"
wheel="$OUT/fusewb-$version-py3-none-any.whl"
listing=$("$PY" -m zipfile -l "$wheel")
for source in bpf/*.c bpf/*.h bpf/kernel-include/SOURCE bpf/kernel-include/include/generated/autoconf.h; do
  grep -q "fusewb/$source " <<<"$listing" || {
    echo "make dist: $source is not in $wheel; check [tool.setuptools.package-data] in pyproject.toml" >&2; exit 2; }
done

# the wheel and its core dependencies (binary wheels only: nothing compiles on the target)
"$PY" -m pip download -q "${platform[@]}" --dest "$OUT/wheelhouse" "$wheel" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
[ -f "$OUT/wheelhouse/$(basename "$wheel")" ] || {
  echo "make dist: pip download of the core dependencies failed (above); check the network or pip's index" >&2; exit 2; }

# the one file: shiv installs the wheelhouse (offline) into a zipapp
pyz="$OUT/fusewb-$version-$tag.pyz"
"$PY" -m shiv --compressed --reproducible -p "/usr/bin/env python3" -c fusewb -o "$pyz" \
  "${platform[@]}" --no-index --find-links "$OUT/wheelhouse" "fusewb==$version" >/dev/null
du -sh "$OUT/fusewb-$version.tar.gz" "$wheel" "$OUT/wheelhouse" "$pyz" | sed 's/^/make dist: /'
