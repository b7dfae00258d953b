#!/usr/bin/env bash
# make run: a real VictoriaMetrics single-node with the gateway in front of it, auth and rate limiting on,
# demo data for two teams, and ready-to-paste curl commands with freshly minted tokens. Ctrl-C stops it all.
# VM_URL=http://host:8428 fronts a VictoriaMetrics single-node that already runs instead of starting one: the demo
# data (series http_requests_total{job="api"}) is written into it, and Ctrl-C leaves it running.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

VM_PORT=${VM_PORT:-8428}
VM_URL=${VM_URL:-}
GW_PORT=${GW_PORT:-8431}
# The gateway binary: VMGATEWAY (relative to the repository's root), else bin/vmgateway, built on a first run.
VMGATEWAY=${VMGATEWAY:-}
build_gateway=""
if [ -z "$VMGATEWAY" ]; then
	VMGATEWAY=bin/vmgateway
	[ -x "$VMGATEWAY" ] || build_gateway=1
elif [ ! -f "$VMGATEWAY" ] || [ ! -x "$VMGATEWAY" ]; then
	# make build would build bin/vmgateway, not this: say what is wrong rather than fail later.
	echo "VMGATEWAY=$VMGATEWAY is not an executable file: point it at a vmgateway binary, or unset it to build and use bin/vmgateway" >&2
	exit 1
fi

# A fresh machine may lack any of them: VictoriaMetrics itself, curl for the demo data, openssl for the demo key.
missing=()
[ -n "$VM_URL" ] || command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
	echo "==> installing ${missing[*]} (Debian packages)"
	sudo_cmd=""
	[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
	$sudo_cmd apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ -n "$build_gateway" ]; then
	echo "==> building $VMGATEWAY (the first run downloads the Go modules and compiles: a minute or two)"
	make --no-print-directory build
fi

# Checked after the install: the victoria-metrics package may have just started its own service on :8428.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_holder() { # what listens on port $1, as ss tells it, when it can
	local who=""
	if command -v ss >/dev/null 2>&1; then
		who=$(ss -Htlnp "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*))' | head -1 | sed 's/^users:((//; s/))$//')
	fi
	echo "${who:-a process ss could not name}"
}
ports=("GW_PORT=$GW_PORT")
[ -n "$VM_URL" ] || ports+=("VM_PORT=$VM_PORT")
for p in "${ports[@]}"; do
	if port_busy "${p#*=}"; then
		echo "port ${p#*=} is already in use by $(port_holder "${p#*=}") (a packaged VictoriaMetrics service, another gateway?): stop it (e.g. systemctl stop victoria-metrics) or run with another ${p%%=*}, e.g. ${p%%=*}=$(( ${p#*=} + 10000 )) make run" >&2
		exit 1
	fi
done

tmp=$(mktemp -d -t vmgateway-run.XXXXXX)
pids=()
cleanup() {
	trap - EXIT INT TERM
	echo
	echo "==> stopping"
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$tmp"
	echo "==> stopped, removed $tmp"
}
trap cleanup EXIT INT TERM

wait_healthy() { # url name logfile pid
	for _ in $(seq 1 100); do
		kill -0 "$4" 2>/dev/null || break
		curl -fsS "$1" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "$2 did not start; its log:" >&2
	tail -n 20 "$3" >&2
	exit 1
}

if [ -n "$VM_URL" ]; then
	VM_URL=${VM_URL%/}
	if ! curl -fsS "$VM_URL/health" >/dev/null 2>&1; then
		echo "VM_URL=$VM_URL does not answer $VM_URL/health: start that VictoriaMetrics single-node, or drop VM_URL to let make run start one" >&2
		exit 1
	fi
	echo "==> using the VictoriaMetrics at $VM_URL (it keeps running after Ctrl-C; the demo data is written into it; temp files in $tmp)"
	echo "    without -search.latencyOffset=0s on it, new samples take 30s to show in queries"
else
	VM_URL="http://127.0.0.1:$VM_PORT"
	echo "==> starting VictoriaMetrics on 127.0.0.1:$VM_PORT (data in $tmp/vm-data)"
	victoria-metrics -storageDataPath="$tmp/vm-data" -httpListenAddr="127.0.0.1:$VM_PORT" -retentionPeriod=1d \
		-search.latencyOffset=0s >"$tmp/vm.log" 2>&1 &
	pids+=($!)
	wait_healthy "$VM_URL/health" victoria-metrics "$tmp/vm.log" "$!"
fi

echo "==> generating a demo key pair (RSA 2048) in $tmp"
openssl genrsa -out "$tmp/demo-key.pem" 2048 2>/dev/null
openssl rsa -in "$tmp/demo-key.pem" -pubout -out "$tmp/demo-pub.pem" 2>/dev/null

cat >"$tmp/limits.yaml" <<YAML
limits:
  - type: queries
    value: 1000
    resolution: minute
  - type: rows_inserted
    value: 100000
    resolution: minute
YAML

echo "==> starting vmgateway on 127.0.0.1:$GW_PORT (auth on, rate limiting on)"
"$VMGATEWAY" -httpListenAddr="127.0.0.1:$GW_PORT" \
	-read.url="$VM_URL" -write.url="$VM_URL" \
	-enable.auth -auth.publicKeyFiles="$tmp/demo-pub.pem" \
	-enable.rateLimit -ratelimit.config="$tmp/limits.yaml" -datasource.url="$VM_URL" \
	>"$tmp/vmgateway.log" 2>&1 &
pids+=($!)
wait_healthy "http://127.0.0.1:$GW_PORT/health" vmgateway "$tmp/vmgateway.log" "$!"

mint() { "$VMGATEWAY" token mint -key="$tmp/demo-key.pem" "$@"; }
READ_DEV=$(mint -extraLabels=team=dev -mode=read -lifetime=24h -subject=dev-reader)
WRITE_DEV=$(mint -extraLabels=team=dev -mode=write -lifetime=24h -subject=dev-writer)
FULL=$(mint -mode=full -lifetime=24h -subject=admin)
EXPIRED=$(mint -extraLabels=team=dev -mode=read -lifetime=-1h -subject=dev-reader)
WRITE_OPS=$(mint -extraLabels=team=ops -mode=write -lifetime=1h -subject=ops-writer)

echo "==> writing demo data for teams dev and ops through the gateway"
now=$(date +%s)
for i in 0 1 2 3 4; do
	ts=$(( (now - 240 + i * 60) * 1000 ))
	printf 'http_requests_total{job="api",instance="dev-1"} %d %d\n' $((100 + i * 10)) "$ts"
done | curl -fsS -X POST -H "Authorization: Bearer $WRITE_DEV" --data-binary @- "http://127.0.0.1:$GW_PORT/api/v1/import/prometheus"
for i in 0 1 2 3 4; do
	ts=$(( (now - 240 + i * 60) * 1000 ))
	printf 'http_requests_total{job="api",instance="ops-1"} %d %d\n' $((500 + i * 50)) "$ts"
done | curl -fsS -X POST -H "Authorization: Bearer $WRITE_OPS" --data-binary @- "http://127.0.0.1:$GW_PORT/api/v1/import/prometheus"
curl -fsS "$VM_URL/internal/force_flush" >/dev/null

GW="http://127.0.0.1:$GW_PORT"
cat <<TXT

vmgateway is protecting VictoriaMetrics at $GW (logs: $tmp/vmgateway.log). Paste these:

# 1. Read token for team dev: 200, only series with team="dev" (the ops series stay invisible)
curl -s '$GW/api/v1/query' --data-urlencode 'query=sum by (team, instance) (http_requests_total)' -H 'Authorization: Bearer $READ_DEV'

# 2. Write token for team dev: 204; the sample is stored with team="dev" whatever the body says
curl -s -w '%{http_code}\n' '$GW/api/v1/import/prometheus' -d 'demo_metric{team="ops"} 42' -H 'Authorization: Bearer $WRITE_DEV'

# 3. The write token cannot read: 403, its mode does not allow read APIs
curl -s '$GW/api/v1/query?query=up' -H 'Authorization: Bearer $WRITE_DEV'

# 4. Unrestricted full token: 200, every team's series
curl -s '$GW/api/v1/query' --data-urlencode 'query=sum by (team, instance) (http_requests_total)' -H 'Authorization: Bearer $FULL'

# 5. Expired token: 401 with the time it expired
curl -s '$GW/api/v1/query?query=up' -H 'Authorization: Bearer $EXPIRED'

# 6. No token: 401
curl -s '$GW/api/v1/query?query=up'

# Explain any token, and whether this gateway would accept it:
$VMGATEWAY token explain -auth.publicKeyFiles=$tmp/demo-pub.pem '$READ_DEV'

Press Ctrl-C to stop VictoriaMetrics and the gateway and remove $tmp.
TXT
wait "${pids[@]}"
