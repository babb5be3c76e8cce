#!/usr/bin/env bash
# The system libraries the napari widget tests need on Debian/Ubuntu: a virtual X display (Xvfb,
# started by pytest-xvfb), Mesa's OpenGL (napari's canvas needs a GL context) and the xcb
# libraries Qt 6's xcb platform plugin loads. Idempotent: apt runs only when something is
# missing. Needs root (CI and the development machines run as root) or passwordless sudo;
# without either it says so and exits 0, and the widget tests then fail with Qt's own message.
set -euo pipefail
PKGS=(xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4
      libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-randr0 libxcb-shape0 libxcb-xinerama0
      libdbus-1-3 libfontconfig1)
command -v dpkg-query >/dev/null || { echo "setup_gui: not a Debian system; install Xvfb and Qt's xcb libraries yourself" >&2; exit 0; }
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "setup_gui: missing ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2; exit 0
    fi
fi
echo "setup_gui: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
