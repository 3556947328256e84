# Shared helpers for the end-to-end tests; sourced, not run. Each test gets $TW (the binary),
# $TW_SOURCE_DIR (the repository) and a fresh scratch directory $TW_WORK.
set -euo pipefail
: "${TW:?TW must name the tutorwatch binary}"
: "${TW_SOURCE_DIR:?}"
: "${TW_WORK:?}"
rm -rf "$TW_WORK"
mkdir -p "$TW_WORK"
cd "$TW_WORK"
RULES="$TW_SOURCE_DIR/rules/packs/default.yaml"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# expect_eq WHAT ACTUAL EXPECTED
expect_eq() {
  [ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
}

# A free TCP port on 127.0.0.1 (asks the kernel, so parallel tests do not collide).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000))
}
