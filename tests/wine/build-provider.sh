#!/usr/bin/env bash
# Cross-build the test NETIO.SYS (tests/wine/netio-provider) in each requested variant, with the
# driver's toolchain (Debian rustc-web, -Zbuild-std=core, lld-link from lld-22; see
# xtask/src/toolchain.rs), into target/wine-provider/netio-VARIANT.sys.
#   usage: tests/wine/build-provider.sh [wsk11] [noif11] [bridge]    (default: all three)
# Prints one built image path per line on stdout; fails loudly.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${WSK_WINE_PROVIDER_DIR:-$root/target/wine-provider}"
target=x86_64-pc-windows-msvc
rustc_bin=/usr/bin/rustc
lld_link=/usr/lib/llvm-22/bin/lld-link

die() { echo "build-provider.sh: error: $*" >&2; exit 1; }
[ -x "$rustc_bin" ] || die "$rustc_bin missing (apt-get install rustc-web rust-web-src; or run cargo xtask sys once)"
[ -x "$lld_link" ] || die "$lld_link missing (apt-get install lld-22)"
[ -d /usr/lib/rustlib/src/rust/library/core ] || die "rust-web-src missing"
command -v cargo >/dev/null || die "cargo not found"

variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(wsk11 noif11 bridge)
mkdir -p "$out"
for variant in "${variants[@]}"; do
  case "$variant" in wsk11|noif11|bridge) ;; *) die "unknown variant $variant (wsk11, noif11, bridge)";; esac
  (cd "$here/netio-provider" && RUSTC="$rustc_bin" RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_LINKER="$lld_link" \
    cargo build --quiet --release --target "$target" --features "$variant" \
      -Zbuild-std=core -Zbuild-std-features=compiler-builtins-mem \
      --target-dir "$out/cargo") >&2 || die "cargo build of variant $variant failed"
  cp "$out/cargo/$target/release/netio.dll" "$out/netio-$variant.sys"
  echo "$out/netio-$variant.sys"
done
