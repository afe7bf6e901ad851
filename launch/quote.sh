# Sourced by the launch scripts: shell quoting for the commands they print (--dry-run).

quote() {  # one word, shell-quoted only where needed (readable dry-run output)
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

quote_all() {  # the words, quoted, space-separated
  local first=1 word
  for word in "$@"; do
    [ "$first" = 1 ] || printf ' '
    quote "$word"
    first=0
  done
}
