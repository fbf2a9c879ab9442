#!/usr/bin/env bash
# Installs what ocimux's demo and tests need, with apt-get, when missing:
# fuse3 (fusermount3), skopeo, umoci, docker-registry, python3 (a fast
# renameat2 racer as another user), acl (setfacl), xfsprogs (a reflink
# filesystem for the export tests); for `serve`: curl, openssl (a test
# certificate), podman, buildah and containerd (real pulling clients),
# chromium (the page at /, in a real browser, headless); python3-venv
# (meta-ocimux's tests run BitBake's bb library from a virtual environment).
# Fails loudly otherwise.
set -euo pipefail
declare -A pkg_of=([fusermount3]=fuse3 [skopeo]=skopeo [umoci]=umoci [docker-registry]=docker-registry [mkfs.xfs]=xfsprogs [/usr/bin/python3]=python3 [getfacl]=acl [curl]=curl [openssl]=openssl [podman]=podman [buildah]=buildah [containerd]=containerd [ctr]=containerd [ab]=apache2-utils [chromium]=chromium)
tools=(fusermount3 skopeo umoci docker-registry mkfs.xfs /usr/bin/python3 getfacl curl openssl podman buildah containerd ctr chromium)
missing=()
for tool in "${tools[@]}" "$@"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${pkg_of[$tool]:-$tool}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing ${missing[*]} and not root: install them (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  # A new machine has no package lists.
  apt-get update -qq
  # Headless chromium draws text with whatever fonts there are; give it some.
  [[ " ${missing[*]} " == *" chromium "* ]] && missing+=(fonts-liberation)
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in "${tools[@]}" "$@"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "deps: $tool is still missing after apt-get" >&2; exit 1; }
done
# meta-ocimux's tests make a virtual environment (BitBake's bb library from
# the Python package index): python3 -m venv needs Debian's python3-venv.
if ! python3 -c 'import ensurepip' 2>/dev/null; then
  [ "$(id -u)" -eq 0 ] || { echo "deps: python3-venv is missing and not root: apt-get install python3-venv" >&2; exit 1; }
  echo "deps: installing python3-venv" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  python3 -c 'import ensurepip' || { echo "deps: python3-venv is still missing after apt-get" >&2; exit 1; }
fi
[ -c /dev/fuse ] || { echo "deps: /dev/fuse is missing: FUSE mounts cannot work on this machine" >&2; exit 1; }
# Distributions' udev rules make /dev/fuse 0666 so that users mount through the
# setuid fusermount3; some containers leave it 0600. The unprivileged-mount test
# needs the usual mode.
if [ "$(stat -c %a /dev/fuse)" != 666 ] && [ "$(id -u)" -eq 0 ]; then chmod 0666 /dev/fuse; fi
# skopeo refuses to run without a signature policy; Debian's containers-common ships one.
if [ ! -f /etc/containers/policy.json ]; then
  mkdir -p /etc/containers
  echo '{"default":[{"type":"insecureAcceptAnything"}]}' >/etc/containers/policy.json
fi
