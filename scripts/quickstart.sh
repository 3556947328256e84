#!/usr/bin/env bash
# Quick start: install what is missing, build, generate a sample stream with injected problem
# institutions, and run the engine on it with the default rules, printing the alerts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# Everything but the alerts goes to stderr, so `scripts/quickstart.sh > alerts.jsonl` keeps them clean.
scripts/install-deps.sh >&2
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >&2
cmake --build build -j"$(nproc)" --target tutorwatch >&2
mkdir -p sample
rm -rf sample/state sample/dead-letter.jsonl
build/tutorwatch gen --institutions 200 --days 60 --seed 7 --out sample/events.jsonl \
  --truth sample/truth.jsonl
build/tutorwatch run --rules rules/packs/default.yaml --input sample/events.jsonl \
  --state sample/state --dead-letter sample/dead-letter.jsonl --alerts -
echo "quickstart: events in sample/events.jsonl, injected problems in sample/truth.jsonl" >&2
