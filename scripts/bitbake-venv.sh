#!/usr/bin/env bash
# A Python virtual environment at DIR with BitBake's `bb` library (the
# bitbake-setup package, pinned), for meta-ocimux's tests; made once, then
# reused. Usage: scripts/bitbake-venv.sh DIR
set -euo pipefail
dir=${1:?usage: scripts/bitbake-venv.sh DIR}
version=2.19.0
[ -x "$dir/bin/python3" ] && "$dir/bin/python3" -c 'import bb' 2>/dev/null && exit 0
rm -rf "$dir.tmp"
python3 -m venv "$dir.tmp" || { echo "bitbake-venv: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
"$dir.tmp/bin/pip" install --quiet --disable-pip-version-check "bitbake-setup==$version" ||
  { echo "bitbake-venv: pip could not install bitbake-setup==$version" >&2; exit 1; }
rm -rf "$dir"
mv "$dir.tmp" "$dir"
