#!/usr/bin/env bash
# Install the Debian packages in scripts/packages.txt that are missing.
# Idempotent and quick when everything is there; needs root to install.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t want < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/packages.txt" ${EXTRA_PACKAGES_FILE:+"$EXTRA_PACKAGES_FILE"})
missing=()
for p in "${want[@]}"; do
	p=$(echo "$p" | tr -d '[:space:]')
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing packages (${missing[*]}); run 'make deps' as root" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
