#!/usr/bin/env bash
# Build MicroPython v1.27.0 ports for the tests, once, into .deps/micropython/ (gitignored).
#
#   unix/micropython                      unix port, 64-bit, standard variant, asyncio frozen
#   unix32/micropython                    the same with -m32 (MICROPY_FORCE_32BIT=1; needs
#                                         gcc-multilib): 31-bit small ints, 32-bit pointers
#   unix32-frozen/micropython             unix32 with firmware/manifest.py frozen in
#   qemu-MPS2_AN385, qemu-MPS2_AN385-frozen
#                                         the qemu port, Cortex-M3, built by the one qemu
#                                         builder boards/qemu/build.py (--profile port
#                                         [--frozen]: the port's own heap, pnpipsec frozen
#                                         or not) into .deps/qemu-board/build-port[-frozen]/
#
# Each unix output has a key file (<dir>/.key): sha256 of the source tarball + the make
# arguments + the compiler version (+ for frozen builds, the content of the frozen
# files); boards/qemu/build.py keys its builds the same way (firmware.json). An output
# whose key matches is not rebuilt, so a cached run costs well under a second. The
# unpacked source (.deps/micropython/src/) and the per-target build folders stay, so a change to firmware/ re-freezes incrementally (seconds).
#
# Source, first found:
#   $MICROPYTHON_TARBALL, or $(dirname repo)/shared/micropython/micropython-1.27.0-min.tar.gz
#   (git archive of v1.27.0, sha256 below), or the official release archive
#   micropython-1.27.0.tar.xz (sha256 pinned below), downloaded into .deps/micropython/.
# Nothing of MicroPython is copied into the repository.
#
# Test hooks for the download path (host_tests/test_micropython_ports.py runs it
# offline against a local file): PNP_MICROPYTHON_RELEASE_URL replaces RELEASE_URL,
# PNP_MICROPYTHON_RELEASE_SHA256 replaces the pinned sha256 the download must have,
# PNP_MICROPYTHON_SHARED_DIR replaces ../shared/micropython (set it to an empty folder to
# force the download), PNP_MICROPYTHON_OUT replaces .deps/micropython. For tests only: a
# build never needs them.
#
# Usage: scripts/build-micropython.sh [-q] [--check|--source] [target ...]
#   targets: unix unix32 unix32-frozen qemu-MPS2_AN385 qemu-MPS2_AN385-frozen (default: all)
#   --check  build nothing; exit 1 with one line per missing/stale output
#   --source only find (or download and verify) the source archive; print its path
#   -q       print only problems and one summary line
# Exit status 0 when every requested target is built and current, 1 otherwise (one line
# per problem on stderr naming what to install). PNP_SKIP_MICROPYTHON_BUILD=1: do nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${PNP_MICROPYTHON_OUT:-$ROOT/.deps/micropython}"                        # test hook
VERSION=1.27.0
MIN_SHA256=196177fd59ca28bfe0d9e8a15e71cd6909bedfe7a0dfa644d20ebe85215a572a
RELEASE_URL="https://github.com/micropython/micropython/releases/download/v$VERSION/micropython-$VERSION.tar.xz"
# sha256 of that release archive, as pinned by Homebrew's micropython formula for 1.27.0.
# Not verified here: these machines have no network, so this exact archive has never
# been downloaded by this script (the download-and-verify steps are tested offline with
# the hooks above, host_tests/test_micropython_ports.py).
RELEASE_SHA256=9874b20646c3bbe81d524f779a16875e5d088b7065e175ffd2aa2a02f50573c9
RELEASE_URL="${PNP_MICROPYTHON_RELEASE_URL:-$RELEASE_URL}"                 # test hook
RELEASE_SHA256="${PNP_MICROPYTHON_RELEASE_SHA256:-$RELEASE_SHA256}"        # test hook
SHARED_DIR="${PNP_MICROPYTHON_SHARED_DIR:-$(dirname "$ROOT")/shared/micropython}"   # test hook
SCRIPT_REV=1   # bump to force a rebuild of everything

QUIET=0
CHECK=0
SOURCE_ONLY=0
TARGETS=()
for a in "$@"; do
  case "$a" in
    -q) QUIET=1 ;;
    --check) CHECK=1 ;;
    --source) SOURCE_ONLY=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    -*) echo "build-micropython: unknown option $a" >&2; exit 2 ;;
    *) TARGETS+=("$a") ;;
  esac
done
ALL=(unix unix32 unix32-frozen qemu-MPS2_AN385 qemu-MPS2_AN385-frozen)
[ "${#TARGETS[@]}" -gt 0 ] || TARGETS=("${ALL[@]}")
[ "${PNP_SKIP_MICROPYTHON_BUILD:-0}" = 1 ] && { echo "build-micropython: skipped (PNP_SKIP_MICROPYTHON_BUILD=1)"; exit 0; }

T0=$(date +%s%N)
PROBLEMS=()
problem() { PROBLEMS+=("$*"); }
say() { [ "$QUIET" = 1 ] || echo "build-micropython: $*"; }
JOBS="$(nproc 2>/dev/null || echo 2)"

mkdir -p "$OUT"
[ -f "$ROOT/.deps/.gitignore" ] || echo '*' >"$ROOT/.deps/.gitignore"
exec 8>"$OUT/.lock"
command -v flock >/dev/null && flock 8

# ------------------------------------------------------------------ the source tarball
sha_of() { sha256sum "$1" | cut -c1-64; }
TARBALL="" TAR_SHA=""
if [ -n "${MICROPYTHON_TARBALL:-}" ]; then
  [ -f "$MICROPYTHON_TARBALL" ] || { echo "build-micropython: MICROPYTHON_TARBALL=$MICROPYTHON_TARBALL does not exist" >&2; exit 1; }
  TARBALL="$MICROPYTHON_TARBALL"
elif [ -f "$SHARED_DIR/micropython-$VERSION-min.tar.gz" ]; then
  TARBALL="$SHARED_DIR/micropython-$VERSION-min.tar.gz"
elif [ -f "$OUT/micropython-$VERSION.tar.xz" ]; then
  TARBALL="$OUT/micropython-$VERSION.tar.xz"
elif [ "$CHECK" = 0 ]; then
  say "downloading $RELEASE_URL"
  if ! curl -fsSL --retry 2 -o "$OUT/download.partial" "$RELEASE_URL" 2>"$OUT/download.err"; then
    echo "build-micropython: cannot download $RELEASE_URL ($(tail -1 "$OUT/download.err")); put the v$VERSION source at ../shared/micropython/micropython-$VERSION-min.tar.gz or set MICROPYTHON_TARBALL" >&2
    rm -f "$OUT/download.partial" "$OUT/download.err"
    exit 1
  fi
  rm -f "$OUT/download.err"
  got="$(sha_of "$OUT/download.partial")"
  if [ "$got" != "$RELEASE_SHA256" ]; then
    echo "build-micropython: $RELEASE_URL has sha256 $got, not the pinned $RELEASE_SHA256: refusing it" >&2
    rm -f "$OUT/download.partial"
    exit 1
  fi
  mv "$OUT/download.partial" "$OUT/micropython-$VERSION.tar.xz"
  TARBALL="$OUT/micropython-$VERSION.tar.xz"
else
  echo "build-micropython: no MicroPython v$VERSION source (../shared/micropython/micropython-$VERSION-min.tar.gz)" >&2
  exit 1
fi
# The sha256 of a 1.3 MB tarball costs a few ms; cache it on size+mtime anyway.
tstat="$(stat -c '%s %Y' "$TARBALL") $TARBALL"
if [ -f "$OUT/.tarball" ] && [ "$(head -1 "$OUT/.tarball")" = "$tstat" ]; then
  TAR_SHA="$(sed -n 2p "$OUT/.tarball")"
else
  TAR_SHA="$(sha_of "$TARBALL")"
  printf '%s\n%s\n' "$tstat" "$TAR_SHA" >"$OUT/.tarball"
fi
case "$TAR_SHA" in
  "$MIN_SHA256"|"$RELEASE_SHA256") ;;
  *) echo "build-micropython: $TARBALL has sha256 $TAR_SHA, which is neither the v$VERSION minimal tree ($MIN_SHA256) nor the release archive ($RELEASE_SHA256)" >&2
     exit 1 ;;
esac

if [ "$SOURCE_ONLY" = 1 ]; then echo "$TARBALL $TAR_SHA"; exit 0; fi

SRC="$OUT/src"
MPY="$SRC/micropython-$VERSION"
unpack() {
  if [ "$(cat "$SRC/.sha256" 2>/dev/null)" = "$TAR_SHA" ] && [ -d "$MPY/py" ]; then return 0; fi
  say "unpacking $(basename "$TARBALL") into .deps/micropython/src"
  rm -rf "$SRC" && mkdir -p "$SRC"
  tar xf "$TARBALL" -C "$SRC"
  [ -d "$MPY/py" ] || { echo "build-micropython: $TARBALL has no micropython-$VERSION/py" >&2; exit 1; }
  echo "$TAR_SHA" >"$SRC/.sha256"
}

# The manifest tool insists on a micropython-lib checkout (README.md) even when the
# manifest require()s nothing from it; the minimal tree has none.
NOLIB="$OUT/no-micropython-lib"
MANIFESTS="$OUT/manifests"
mkdir -p "$NOLIB" "$MANIFESTS"
[ -f "$NOLIB/README.md" ] || echo "empty: the pnpipsec manifests require() nothing from micropython-lib" >"$NOLIB/README.md"
write_if_changed() { # path content
  if [ "$(cat "$1" 2>/dev/null)" != "$2" ]; then printf '%s\n' "$2" >"$1"; fi
}
write_if_changed "$MANIFESTS/unix.py" 'include("$(MPY_DIR)/extmod/asyncio")'
# native=True: the viper field arithmetic frozen as x86 code, as the real boards freeze
# it for their own architecture (firmware/manifest.py), so the frozen figures are a
# board's, not those of a kernel compiled into the heap at first use
write_if_changed "$MANIFESTS/frozen.py" "include(\"\$(MPY_DIR)/extmod/asyncio\")
include(\"$ROOT/firmware/manifest.py\", native=True)"

# ------------------------------------------------------------------ tools
cc_version() { "$1" --version 2>/dev/null | head -1; }
have_host_cc() { command -v make >/dev/null && command -v gcc >/dev/null && command -v python3 >/dev/null; }
have_m32() {
  local t; t="$(mktemp -d)"
  printf '#include <stdio.h>\nint main(void){printf("%%d",(int)sizeof(void*));return 0;}\n' >"$t/a.c"
  local ok=1
  gcc -m32 -o "$t/a" "$t/a.c" >/dev/null 2>&1 && [ "$("$t/a" 2>/dev/null)" = 4 ] && ok=0
  rm -rf "$t"
  return $ok
}
have_arm() {
  command -v arm-none-eabi-gcc >/dev/null && [ -n "$(arm-none-eabi-gcc -print-file-name=libc.a | grep /)" ] &&
    [ -f "$(arm-none-eabi-gcc -print-file-name=libc.a)" ]
}

frozen_hash() { # content of everything firmware/manifest.py freezes
  (cd "$ROOT/firmware" && find manifest.py pnpipsec -name '*.py' -not -path '*/__pycache__/*' | LC_ALL=C sort |
    xargs sha256sum) | sha256sum | cut -c1-64
}

# target -> port, make args, compiler, output file
target_spec() {
  local t="$1"
  COMMON_UNIX="VARIANT=standard MPY_LIB_DIR=$NOLIB MICROPY_PY_BTREE=0 MICROPY_PY_SSL=0 MICROPY_PY_FFI=0 MICROPY_USE_READLINE=0"
  FROZEN=0
  case "$t" in
    unix) PORT=unix; CCV="$(cc_version gcc)"; ARTIFACT=micropython
          ARGS="$COMMON_UNIX BUILD=build-pnp-unix FROZEN_MANIFEST=$MANIFESTS/unix.py" ;;
    unix32) PORT=unix; CCV="$(cc_version gcc) -m32"; ARTIFACT=micropython
          ARGS="$COMMON_UNIX MICROPY_FORCE_32BIT=1 BUILD=build-pnp-unix32 FROZEN_MANIFEST=$MANIFESTS/unix.py" ;;
    unix32-frozen) PORT=unix; CCV="$(cc_version gcc) -m32"; ARTIFACT=micropython; FROZEN=1
          ARGS="$COMMON_UNIX MICROPY_FORCE_32BIT=1 BUILD=build-pnp-unix32-frozen FROZEN_MANIFEST=$MANIFESTS/frozen.py MPY_CROSS_FLAGS=-march=x86" ;;
    *) echo "build-micropython: unknown target $t (known: ${ALL[*]})" >&2; exit 2 ;;
  esac
  KEY="rev $SCRIPT_REV | $TAR_SHA | $PORT | $ARGS | $CCV"
  if [ "$FROZEN" = 1 ]; then
    local man; man="$(sed -n 's/.*FROZEN_MANIFEST=\([^ ]*\).*/\1/p' <<<"$ARGS")"
    KEY="$KEY | frozen $(frozen_hash) $(sha_of "$man")"
  fi
  KEY="$(printf '%s' "$KEY" | sha256sum | cut -c1-64)"
}

MPY_CROSS_DONE=0
build_mpy_cross() {
  [ "$MPY_CROSS_DONE" = 1 ] && return 0
  if [ ! -x "$MPY/mpy-cross/build/mpy-cross" ]; then
    say "building mpy-cross v$VERSION (freezes the manifests)"
  fi
  run_make "$MPY/mpy-cross" "$OUT/mpy-cross.log" || return 1
  MPY_CROSS_DONE=1
}

run_make() { # dir log args...
  local dir="$1" log="$2"; shift 2
  if make -C "$dir" -j"$JOBS" "$@" >"$log" 2>&1; then return 0; fi
  return 1
}

STATES=()
for t in "${TARGETS[@]}"; do
  case "$t" in
    qemu-MPS2_AN385|qemu-MPS2_AN385-frozen)
      # the one qemu builder (its own key, lock and source check)
      qargs=(--profile port -q); [ "$t" = qemu-MPS2_AN385-frozen ] && qargs+=(--frozen)
      t1=$(date +%s)
      qbuild() { MICROPYTHON_TARBALL="$TARBALL" python3 "$ROOT/boards/qemu/build.py" "${qargs[@]}" "$@" 2>&1 >/dev/null; }
      if qout="$(qbuild --check)"; then
        STATES+=("$t ok")
      elif [ "$CHECK" = 0 ] && qout="$(qbuild)"; then
        STATES+=("$t built in $(( $(date +%s) - t1 )) s")
      elif [ "$CHECK" = 1 ]; then
        problem "MicroPython $t is not built or stale: run scripts/build-micropython.sh"; STATES+=("$t STALE")
      elif ! have_arm; then
        problem "cannot build MicroPython $t: arm-none-eabi-gcc or newlib missing: install gcc-arm-none-eabi libnewlib-arm-none-eabi"
        STATES+=("$t MISSING")
      else
        problem "MicroPython $t does not build (boards/qemu/build.py): $(tail -1 <<<"$qout" | cut -c1-300)"
        STATES+=("$t FAILED")
      fi
      continue ;;
  esac
  target_spec "$t"
  dest="$OUT/$t"
  if [ "$(cat "$dest/.key" 2>/dev/null)" = "$KEY" ] && [ -f "$dest/$ARTIFACT" ]; then
    STATES+=("$t ok")
    continue
  fi
  if [ "$CHECK" = 1 ]; then
    problem "MicroPython $t is not built or stale: run scripts/build-micropython.sh"
    STATES+=("$t STALE"); continue
  fi
  # prerequisites
  if ! have_host_cc; then
    problem "cannot build MicroPython $t: make/gcc/python3 missing: install build-essential python3"
    STATES+=("$t MISSING"); continue
  fi
  case "$t" in
    unix32*) if ! have_m32; then
               problem "cannot build MicroPython $t: gcc -m32 does not work: install gcc-multilib"
               STATES+=("$t MISSING"); continue
             fi ;;
  esac
  unpack
  t1=$(date +%s)
  if ! build_mpy_cross; then
    problem "mpy-cross v$VERSION does not build: see .deps/micropython/mpy-cross.log"
    STATES+=("$t FAILED"); continue
  fi
  say "building $t (make -C ports/$PORT $ARGS)"
  log="$OUT/$t.log"
  # shellcheck disable=SC2086
  if ! run_make "$MPY/ports/$PORT" "$log" $ARGS; then
    problem "MicroPython $t does not build: see .deps/micropython/$t.log ($(grep -m1 -iE 'error' "$log" | cut -c1-160))"
    STATES+=("$t FAILED"); continue
  fi
  bdir="$(sed -n 's/.*BUILD=\([^ ]*\).*/\1/p' <<<"$ARGS")"
  rm -rf "$dest.partial" && mkdir -p "$dest.partial"
  cp "$MPY/ports/$PORT/$bdir/$ARTIFACT" "$dest.partial/$ARTIFACT"
  echo "$KEY" >"$dest.partial/.key"
  rm -rf "$dest" && mv "$dest.partial" "$dest"
  STATES+=("$t built in $(( $(date +%s) - t1 )) s")
done

MS=$(( ($(date +%s%N) - T0) / 1000000 ))
summary="$(IFS=,; echo "${STATES[*]}" | sed 's/,/, /g')"
if [ "$QUIET" = 1 ]; then
  echo "micropython: $summary"
else
  say "$summary ($((MS / 1000)).$(printf '%03d' $((MS % 1000))) s)"
fi
for p in "${PROBLEMS[@]+"${PROBLEMS[@]}"}"; do echo "$p" >&2; done
[ "${#PROBLEMS[@]}" = 0 ]
