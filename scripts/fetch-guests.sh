#!/usr/bin/env bash
# Fetches and builds the real third-party guests of rewind's guest tests
# (crates/guests) into guests/cache/ (git-ignored). Idempotent: what is
# already in the cache is kept. Needs root on Debian (apt-get) and the
# package registries (Debian, npm, PyPI); nothing else is downloaded.
#
#   scripts/fetch-guests.sh            # fetch + build what is missing
#   REWIND_GUESTS_REBUILD=1 scripts/fetch-guests.sh   # rebuild the wasm
#
# Output (guests/cache/out/):
#   rapier2d.wasm   npm @dimforge/rapier2d-deterministic@0.20.0 (prebuilt)
#   sqlite.wasm     sqlite3.c of npm better-sqlite3@13.2.0 + guests/src/sqlite_driver.c
#   lua.wasm        Lua 5.4 of PyPI lupa==2.8 (sdist) + guests/src/lua_driver.c
#   doom.wasm       doomgeneric of PyPI cydoomgeneric==0.1.0 (sdist) + guests/src/doom_driver.c
#   wad/freedoom1.wad   Debian package freedoom
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${REWIND_GUESTS_CACHE:-$ROOT/guests/cache}
DL=$CACHE/downloads
SRC=$CACHE/src
OUT=$CACHE/out
DRIVERS=$ROOT/guests/src

RAPIER_PKG=@dimforge/rapier2d-deterministic@0.20.0
SQLITE_PKG=better-sqlite3@13.2.0
LUPA_VERSION=2.8
DOOM_VERSION=0.1.0

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'fetch-guests.sh: ERROR: %s\n' "$*" >&2
    exit 1
}
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR
START=$SECONDS

mkdir -p "$DL" "$SRC" "$OUT/wad"

# ---------------------------------------------------------------- tools ----
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found: install $* by hand (Debian packages)"
    [ "$(id -u)" = 0 ] || die "need root to apt-get install $* (or install them first)"
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

need=()
command -v clang >/dev/null || need+=(clang)
command -v wasm-ld >/dev/null || command -v wasm-ld-14 >/dev/null || need+=(lld)
[ -f /usr/lib/wasm32-wasi/libc.a ] || need+=(wasi-libc)
compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a" >/dev/null || need+=(libclang-rt-dev-wasm32)
command -v wasm2wat >/dev/null || need+=(wabt)
command -v npm >/dev/null || need+=(npm)
command -v dpkg-deb >/dev/null || need+=(dpkg)
if ! command -v pip3 >/dev/null && ! command -v pip >/dev/null; then need+=(python3-pip); fi
if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; else say "tools present (clang, lld, wasi-libc, clang-rt wasm32, wabt, npm, pip)"; fi
PIP=$(command -v pip3 || command -v pip)

CC=clang
CFLAGS=(--target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor
    -D_WASI_EMULATED_SIGNAL -D_WASI_EMULATED_PROCESS_CLOCKS -D_WASI_EMULATED_MMAN -D_WASI_EMULATED_GETPID
    -Wno-everything "-ffile-prefix-map=$CACHE=/guests" "-ffile-prefix-map=$ROOT=/rewind")
LDLIBS=(-lwasi-emulated-signal -lwasi-emulated-process-clocks -lwasi-emulated-mman -lwasi-emulated-getpid)
# The drivers export their entry points with export_name attributes.
LDFLAGS=(-Wl,-z,stack-size=1048576)

# ------------------------------------------------------------ downloads ----
npm_fetch() { # package@version -> tarball path
    local spec=$1 name
    name=$(printf '%s' "$spec" | sed -e 's/^@//' -e 's#/#-#' -e 's/@/-/').tgz
    if [ ! -s "$DL/$name" ]; then
        say "npm pack $spec"
        (cd "$DL" && npm pack --silent "$spec" >/dev/null) || die "npm pack $spec failed"
    fi
    [ -s "$DL/$name" ] || die "npm pack $spec did not produce $DL/$name"
    printf '%s\n' "$DL/$name"
}

pip_fetch() { # file pip-args...
    local file=$1
    shift
    if [ ! -s "$DL/$file" ]; then
        say "pip download $*"
        "$PIP" download --quiet --no-deps -d "$DL" "$@" || die "pip download $* failed"
    fi
    [ -s "$DL/$file" ] || die "pip download $* did not produce $DL/$file"
}

unpack() { # tarball dir
    if [ ! -d "$2" ]; then
        mkdir -p "$2.tmp"
        tar xzf "$1" -C "$2.tmp"
        mv "$2.tmp" "$2"
    fi
}

RAPIER_TGZ=$(npm_fetch "$RAPIER_PKG")
SQLITE_TGZ=$(npm_fetch "$SQLITE_PKG")
# --no-binary only for lupa: its build dependencies come as wheels (building
# Cython from source for pip's metadata step takes minutes).
pip_fetch "lupa-$LUPA_VERSION.tar.gz" --no-binary lupa "lupa==$LUPA_VERSION"
pip_fetch "cydoomgeneric-$DOOM_VERSION.tar.gz" --no-binary cydoomgeneric "cydoomgeneric==$DOOM_VERSION"

if ! compgen -G "$DL/freedoom_*.deb" >/dev/null; then
    if [ "$APT_UPDATED" = 0 ] && ! apt-cache show freedoom >/dev/null 2>&1; then
        say "apt-get update"
        apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    say "apt-get download freedoom"
    # apt's sandbox user must be able to write where it downloads.
    tmp=$(mktemp -d)
    chmod 777 "$tmp"
    (cd "$tmp" && apt-get download freedoom >/dev/null) || die "apt-get download freedoom failed"
    mv "$tmp"/freedoom_*.deb "$DL"/
    rmdir "$tmp"
fi

unpack "$RAPIER_TGZ" "$SRC/rapier2d"
unpack "$SQLITE_TGZ" "$SRC/better-sqlite3"
unpack "$DL/lupa-$LUPA_VERSION.tar.gz" "$SRC/lupa"
unpack "$DL/cydoomgeneric-$DOOM_VERSION.tar.gz" "$SRC/cydoomgeneric"
if [ ! -d "$SRC/freedoom" ]; then
    dpkg-deb -x "$(ls "$DL"/freedoom_*.deb | head -n1)" "$SRC/freedoom.tmp"
    mv "$SRC/freedoom.tmp" "$SRC/freedoom"
fi

# --------------------------------------------------------------- builds ----
fresh() { # output inputs... : true when the output must be (re)built
    local out=$1
    shift
    [ "${REWIND_GUESTS_REBUILD:-0}" = 1 ] && return 0
    [ -s "$out" ] || return 0
    for f in "$@"; do [ "$f" -nt "$out" ] && return 0; done
    return 1
}

# rapier: prebuilt by its authors.
RAPIER_WASM=$SRC/rapier2d/package/rapier_wasm2d_bg.wasm
[ -s "$RAPIER_WASM" ] || die "rapier package has no package/rapier_wasm2d_bg.wasm"
if fresh "$OUT/rapier2d.wasm" "$RAPIER_WASM"; then
    cp "$RAPIER_WASM" "$OUT/rapier2d.wasm"
    say "rapier2d.wasm: copied from $RAPIER_PKG"
fi

# SQLite
SQLITE_DIR=$SRC/better-sqlite3/package/deps/sqlite3
[ -s "$SQLITE_DIR/sqlite3.c" ] || die "better-sqlite3 has no deps/sqlite3/sqlite3.c"
if fresh "$OUT/sqlite.wasm" "$DRIVERS/sqlite_driver.c" "$0"; then
    say "building sqlite.wasm"
    $CC "${CFLAGS[@]}" -I"$SQLITE_DIR" \
        -DSQLITE_THREADSAFE=0 -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_OMIT_WAL -DSQLITE_OMIT_SHARED_CACHE \
        -DSQLITE_DEFAULT_MEMSTATUS=0 -DSQLITE_TEMP_STORE=3 -DSQLITE_OMIT_DEPRECATED \
        "$SQLITE_DIR/sqlite3.c" "$DRIVERS/sqlite_driver.c" \
        "${LDFLAGS[@]}" "${LDLIBS[@]}" \
        -o "$OUT/sqlite.wasm.tmp" || die "compiling SQLite failed"
    mv "$OUT/sqlite.wasm.tmp" "$OUT/sqlite.wasm"
fi

# Lua 5.4
LUA_DIR=$SRC/lupa/lupa-$LUPA_VERSION/third-party/lua54
[ -s "$LUA_DIR/lapi.c" ] || die "lupa sdist has no third-party/lua54/lapi.c"
if fresh "$OUT/lua.wasm" "$DRIVERS/lua_driver.c" "$DRIVERS/shim/setjmp.h" "$0"; then
    say "building lua.wasm"
    lua_src=()
    for f in "$LUA_DIR"/*.c; do
        case $(basename "$f") in
        lua.c | luac.c | onelua.c | linit.c | liolib.c | loslib.c | loadlib.c | ltests.c) ;;
        *) lua_src+=("$f") ;;
        esac
    done
    $CC "${CFLAGS[@]}" -I"$DRIVERS/shim" -I"$LUA_DIR" -DLUA_USE_C89 \
        "${lua_src[@]}" "$DRIVERS/lua_driver.c" \
        "${LDFLAGS[@]}" "${LDLIBS[@]}" \
        -o "$OUT/lua.wasm.tmp" || die "compiling Lua failed"
    mv "$OUT/lua.wasm.tmp" "$OUT/lua.wasm"
fi

# Doom: a patched copy of doomgeneric (the originals stay untouched).
DOOM_ORIG=$SRC/cydoomgeneric/cydoomgeneric-$DOOM_VERSION/doomgeneric
[ -s "$DOOM_ORIG/d_main.c" ] || die "cydoomgeneric sdist has no doomgeneric/d_main.c"
if fresh "$OUT/doom.wasm" "$DRIVERS/doom_driver.c" "$0"; then
    say "patching doomgeneric (split D_DoomLoop, fix I_InitInput's prototype)"
    DOOM_DIR=$SRC/doom-patched
    rm -rf "$DOOM_DIR"
    cp -r "$DOOM_ORIG" "$DOOM_DIR"
    # D_DoomLoop: keep the set-up, return before the endless loop, and make
    # the loop's body a function of its own (D_DoomTick).
    sed -i '/^void D_DoomLoop (void)/,/^}/ s/^    while (1)$/    return;\n}\n\nvoid D_DoomTick (void)\n{\n    if (1)/' "$DOOM_DIR/d_main.c"
    grep -q '^void D_DoomTick (void)' "$DOOM_DIR/d_main.c" || die "patching D_DoomLoop failed (d_main.c changed?)"
    # i_video.c declares `extern int I_InitInput(void)`; it is `void`: wasm-ld
    # would turn the mismatch into a trapping stub.
    sed -i 's/extern int I_InitInput(void);/extern void I_InitInput(void);/' "$DOOM_DIR/i_video.c"
    grep -q 'extern void I_InitInput(void);' "$DOOM_DIR/i_video.c" || die "patching I_InitInput failed"
    say "building doom.wasm"
    $CC "${CFLAGS[@]}" -I"$DOOM_DIR" -DNORMALUNIX -DLINUX -D_DEFAULT_SOURCE \
        "$DOOM_DIR"/*.c "$DRIVERS/doom_driver.c" \
        "${LDFLAGS[@]}" "${LDLIBS[@]}" \
        -o "$OUT/doom.wasm.tmp" || die "compiling Doom failed"
    mv "$OUT/doom.wasm.tmp" "$OUT/doom.wasm"
fi

WAD=$(find "$SRC/freedoom" -name freedoom1.wad | head -n1)
[ -n "$WAD" ] && [ -s "$WAD" ] || die "the freedoom package has no freedoom1.wad"
if fresh "$OUT/wad/freedoom1.wad" "$WAD"; then
    cp "$WAD" "$OUT/wad/freedoom1.wad"
    say "wad/freedoom1.wad: from $(basename "$(ls "$DL"/freedoom_*.deb | head -n1)")"
fi

say "guests ready in $OUT ($((SECONDS - START)) s):"
for f in rapier2d.wasm sqlite.wasm lua.wasm doom.wasm wad/freedoom1.wad; do
    printf '    %-18s %9d bytes\n' "$f" "$(stat -c %s "$OUT/$f")"
done
