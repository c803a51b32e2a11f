# Shared by benches/load.sh and benches/load-ab.sh (sourced, not run).

# Installs wrk with apt-get when it is missing.
ensure_wrk() {
  if ! command -v wrk >/dev/null 2>&1; then
    echo "== installing wrk (apt-get)"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
  fi
}

# Starts `$1 --addr 127.0.0.1:0 ${@:3}` with its output in directory $2,
# waits for it to print its address, token and body file, and writes them
# to $2/url, $2/token and $2/body_file, and its JWT (if it prints one) to
# $2/jwt. Sets SERVER_PID. Exits if the server does not start.
start_load_server() {
  local bin=$1 dir=$2
  shift 2
  mkdir -p "$dir"
  "$bin" --addr 127.0.0.1:0 "$@" >"$dir/out" 2>"$dir/err" &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    grep -q '^body-file ' "$dir/out" 2>/dev/null && break
    sleep 0.1
  done
  sed -n 's/^listening //p' "$dir/out" >"$dir/url"
  sed -n 's/^token //p' "$dir/out" >"$dir/token"
  sed -n 's/^jwt //p' "$dir/out" >"$dir/jwt"
  sed -n 's/^body-file //p' "$dir/out" >"$dir/body_file"
  if [ ! -s "$dir/url" ] || [ ! -s "$dir/token" ] || [ ! -s "$dir/body_file" ]; then
    echo "$bin did not start:" >&2
    cat "$dir/out" "$dir/err" >&2
    exit 1
  fi
}

# Writes the opening of a wrk Lua script to stdout: POST the body file,
# with the token when $3 is "yes".
wrk_request_lua() { # $1 = token, $2 = body file, $3 = yes|no
  echo 'wrk.method = "POST"'
  echo 'wrk.headers["Content-Type"] = "application/json"'
  if [ "$3" = yes ]; then echo "wrk.headers[\"Authorization\"] = \"Bearer $1\""; fi
  echo "local f = assert(io.open(\"$2\", \"rb\")); wrk.body = f:read(\"*a\"); f:close()"
}
