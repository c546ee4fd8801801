# Sourced by ./dev and .ci/run: puts Node >= 22 and pnpm 12 on PATH.
# The system Node may be older (Debian ships 20); the npm package `node@24` carries a real
# Node 24 binary, so we install it into a project-local prefix instead of touching the system.
_sayiir_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_sayiir_tc="$_sayiir_root/.toolchain"

_sayiir_node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [ -x "$_sayiir_tc/node_modules/.bin/node" ]; then
  export PATH="$_sayiir_tc/node_modules/.bin:$PATH"
fi
if [ "$(_sayiir_node_major)" -lt 22 ]; then
  echo "bootstrap: system Node $(node --version 2>/dev/null || echo none) is too old; installing node@24 into .toolchain" >&2
  mkdir -p "$_sayiir_tc"
  npm install --prefix "$_sayiir_tc" --no-audit --no-fund --loglevel=error node@24 >&2
  export PATH="$_sayiir_tc/node_modules/.bin:$PATH"
fi
if ! pnpm --version 2>/dev/null | grep -q '^12\.'; then
  echo "bootstrap: installing pnpm 12 into .toolchain" >&2
  mkdir -p "$_sayiir_tc"
  npm install --prefix "$_sayiir_tc" --no-audit --no-fund --loglevel=error pnpm@12 >&2
  export PATH="$_sayiir_tc/node_modules/.bin:$PATH"
fi
echo "bootstrap: node $(node --version), pnpm $(pnpm --version)" >&2
