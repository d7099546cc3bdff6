#!/usr/bin/env bash
# The ingest and drain benchmarks on an earlier commit and on this tree, one after the other, in one run:
#   make bench-compare REV=<commit>      (about 12 minutes)
# A refactor claims "no slower"; this measures it. The earlier commit is checked out in a git worktree under
# var/bench-before and run with this tree's virtualenv; each benchmark writes its tables to its tree's
# bench/results/ and this script prints them side by side at the end.
set -euo pipefail
rev="${1:?give the commit to compare with, e.g. make bench-compare REV=b82521b}"
here="$(cd "$(dirname "$0")/.." && pwd)"
python="$here/.venv/bin/python"
before="$here/var/bench-before"
rm -rf "$before"
git -C "$here" worktree prune
git -C "$here" worktree add --force --detach "$before" "$rev" >/dev/null
trap 'git -C "$here" worktree remove --force "$before" >/dev/null 2>&1 || true' EXIT
for tree in "$before" "$here"; do
  for bench in ingest drain; do
    echo "== $bench at $(git -C "$tree" rev-parse --short HEAD) =="
    (cd "$tree" && "$python" "bench/$bench.py")
  done
done
# The earlier tree goes when this script ends: keep its tables beside this tree's, named by its commit.
mkdir -p "$here/bench/results"
for file in "$before"/bench/results/*.md; do
  [ -e "$file" ] && cp "$file" "$here/bench/results/before-$(git -C "$before" rev-parse --short HEAD)-$(basename "$file")"
done
echo
for bench in ingest drain; do
  for tree in "$before" "$here"; do
    latest="$(ls -t "$tree"/bench/results/"$bench"-*.md 2>/dev/null | head -1 || true)"
    echo "== $bench at $(git -C "$tree" rev-parse --short HEAD): ${latest:-no result} =="
    [ -n "$latest" ] && cat "$latest"
  done
done
