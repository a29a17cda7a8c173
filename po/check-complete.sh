#!/bin/sh
# Fails unless every catalogue in po/ compiles with `msgfmt --check` and
# reports no fuzzy or untranslated messages. TAP output.
dir=$1
n=0
fail=0
for lang in $(grep -v '^#' "$dir/LINGUAS"); do
  n=$((n + 1))
  stats=$(LC_ALL=C msgfmt --check --statistics -o /dev/null "$dir/$lang.po" 2>&1)
  if [ $? -ne 0 ] || echo "$stats" | grep -q -E 'fuzzy|untranslated'; then
    echo "not ok $n - $lang: $stats"
    fail=1
  else
    echo "ok $n - $lang: $stats"
  fi
done
# Every message of the template must be in the catalogue (msgcmp).
if command -v msgcmp >/dev/null 2>&1; then
  for lang in $(grep -v '^#' "$dir/LINGUAS"); do
    n=$((n + 1))
    if out=$(msgcmp "$dir/$lang.po" "$dir/baleen.pot" 2>&1); then
      echo "ok $n - $lang covers baleen.pot"
    else
      echo "not ok $n - $lang misses messages of baleen.pot: $out" | head -5
      fail=1
    fi
  done
fi
echo "1..$n"
exit $fail
