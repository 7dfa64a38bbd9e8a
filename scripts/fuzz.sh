#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (default 60 s each).
#   bash scripts/fuzz.sh            # all targets, 60 s each
#   SECONDS_EACH=600 bash scripts/fuzz.sh client_frame
# Needs the nightly toolchain (rustup toolchain install nightly) and cargo-fuzz
# (installed here when missing). Crashes are written to fuzz/artifacts/<target>/ and stop the run
# with a non-zero exit; the corpus grows in fuzz/corpus/<target>/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${SECONDS_EACH:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi
for target in "${targets[@]}"; do
  echo "== fuzzing $target for ${SECONDS_EACH}s"
  (cd fuzz && cargo +nightly fuzz run "$target" -- -max_total_time="$SECONDS_EACH" -max_len=4096 -rss_limit_mb=2048)
done
echo "== no crashes in ${targets[*]}"
