# Shared parts of the benchmark scripts (sourced, not run): the peer nginx tuned as a
# user would tune it (sendfile, open_file_cache, keep-alive), wrk runs, medians.
#
# The sourcing script sets WORK (a scratch directory) and keeps its background pids
# in the array `pids` (killed by its exit trap).

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# gateway_binary: sets BIN to $GATEWAY_BIN when given, else builds the release gateway
# (a no-op when it is current) and sets BIN to it. Uses the sourcing script's ROOT and say.
gateway_binary() {
  if [ -n "${GATEWAY_BIN:-}" ]; then
    BIN=$GATEWAY_BIN
  else
    say "building the release binary"
    (cd "$ROOT" && cargo build --release -q -p ota-gateway)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ota-gateway"
  fi
}

# nginx_start PORT ROOT [EXTRA]: serves ROOT on 127.0.0.1:PORT; EXTRA is added inside
# the server block (locations). Waits until it answers; sets NGINX_PID.
nginx_start() {
  local port=$1 root=$2 extra=${3:-}
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx/nginx.conf" <<CONF
user $(id -un);
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  open_file_cache max=1000 inactive=60s;
  open_file_cache_valid 60s;
  default_type application/octet-stream;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx; fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  server {
    listen 127.0.0.1:$port;
    root $root;
$extra
  }
}
CONF
  nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
  NGINX_PID=$!
  pids+=("$NGINX_PID")
  until curl -s -o /dev/null "http://127.0.0.1:$port/"; do
    kill -0 "$NGINX_PID" 2>/dev/null || { echo "nginx failed to start" >&2; cat "$WORK/nginx/error.log" >&2; exit 1; }
    sleep 0.2
  done
}

# run_wrk URL CONNECTIONS [THREADS] [LUA-SCRIPT] -> "requests/s bytes/s"
run_wrk() {
  wrk -t"${3:-2}" -c"$2" -d"${DURATION:-10}s" ${4:+-s "$4"} "$1" | awk '
    /Requests\/sec/ {r=$2}
    /Transfer\/sec/ {v=$2; u=substr(v, length(v)-1); n=substr(v, 1, length(v)-2);
      m = (u=="GB") ? 1073741824 : (u=="MB") ? 1048576 : (u=="KB") ? 1024 : 1; b=n*m}
    END {printf "%.0f %.0f\n", r, b}'
}

# The median of numbers on stdin, one a line.
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

# The 1-minute load average now.
load1() { cut -d' ' -f1 /proc/loadavg; }
