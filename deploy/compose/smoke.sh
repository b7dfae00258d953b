#!/usr/bin/env bash
# Smoke test of the compose setup: a write token writes and its team label is stored, a read token of that team
# reads it back, another team's token does not see it, refusals are refused, and vmagent's samples arrive through
# the gateway.
#
#   ./smoke.sh          keys, docker compose up --build, the checks, then docker compose down -v (KEEP=1 keeps it up)
#   ./smoke.sh keys     only the demo key pair and vmagent's token, in ./keys (kept if they exist)
#   ./smoke.sh check    only the checks, against GATEWAY_URL (http://localhost:8431) and VM_URL (http://localhost:8428)
#
# Tokens are minted by the gateway image's own binary, or by a local one: VMGATEWAY=../../bin/vmgateway ./smoke.sh
# (go test ./deploy/ runs `keys` and `check` that way against the same flags and files, without Docker).
set -euo pipefail
cd "$(dirname "$0")"

KEYS_DIR=${KEYS_DIR:-$PWD/keys}
GATEWAY_URL=${GATEWAY_URL:-http://localhost:8431}
VM_URL=${VM_URL:-http://localhost:8428}

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

mint() {
	if [ -n "${VMGATEWAY:-}" ]; then
		"$VMGATEWAY" token mint -key="$KEYS_DIR/key.pem" "$@"
	else
		docker compose run --rm --no-deps -T --user "$(id -u):$(id -g)" -v "$KEYS_DIR:/mint:ro" \
			--entrypoint /vmgateway vmgateway token mint -key=/mint/key.pem "$@"
	fi
}

keys() {
	mkdir -p "$KEYS_DIR"
	if [ ! -s "$KEYS_DIR/key.pem" ]; then
		echo "==> a demo RSA key pair in $KEYS_DIR"
		(umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -quiet -out "$KEYS_DIR/key.pem")
		openssl pkey -in "$KEYS_DIR/key.pem" -pubout -out "$KEYS_DIR/pub.pem"
	fi
	if [ ! -s "$KEYS_DIR/vmagent.token" ]; then
		echo "==> vmagent's write token (a year) in $KEYS_DIR/vmagent.token"
		mint -mode=write -subject=vmagent -lifetime=8760h >"$KEYS_DIR/vmagent.token.tmp"
		mv "$KEYS_DIR/vmagent.token.tmp" "$KEYS_DIR/vmagent.token"
	fi
	# The containers run as other users: they read the public key and the token, never the private key.
	chmod 644 "$KEYS_DIR/pub.pem" "$KEYS_DIR/vmagent.token"
}

# get URL [curl args...]: the body; fails on a transport error.
get() {
	curl -sS --max-time 10 "$@" || fail "curl $1"
}

# status URL [curl args...]: the HTTP status only.
status() {
	curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$@" || fail "curl $1"
}

# until_contains SECONDS WANT URL [curl args...]: polls until the body contains WANT.
until_contains() {
	local deadline=$((SECONDS + $1)) want=$2 body=""
	shift 2
	while [ $SECONDS -lt $deadline ]; do
		body=$(curl -sS --max-time 10 "$@" 2>&1) || true
		case $body in *"$want"*) return 0 ;; esac
		sleep 1
	done
	fail "$1 never contained $want; last answer: $body"
}

check() {
	echo "==> checking $GATEWAY_URL (VictoriaMetrics at $VM_URL)"
	until_contains 60 OK "$GATEWAY_URL/health"

	local write read other full run
	write=$(mint -mode=write -extraLabels=team=smoke -subject=smoke-writer)
	read=$(mint -mode=read -extraLabels=team=smoke -subject=smoke-reader)
	other=$(mint -mode=read -extraLabels=team=other -subject=other-reader)
	full=$(mint -mode=full -subject=smoke-admin)
	run="$(date +%s)$$"

	[ "$(status "$GATEWAY_URL/api/v1/query?query=up")" = 401 ] || fail "a request without a token is not refused with 401"
	[ "$(status "$GATEWAY_URL/api/v1/query?query=up" -H "Authorization: Bearer $write")" = 403 ] ||
		fail "a write token may read"
	[ "$(status "$GATEWAY_URL/api/v1/import/prometheus" -H "Authorization: Bearer $write" \
		-d "smoke_test_metric{run=\"$run\",team=\"ops\"} 1")" = 204 ] || fail "the write token cannot write"
	echo "    writes and refusals: ok"

	# The gateway stored the sample with the token's team, whatever the body said: VictoriaMetrics itself shows it.
	until_contains 30 '"team":"smoke"' "$VM_URL/api/v1/query" --data-urlencode "query=smoke_test_metric{run=\"$run\"}"
	until_contains 30 '"team":"smoke"' "$GATEWAY_URL/api/v1/query" -H "Authorization: Bearer $read" \
		--data-urlencode "query=smoke_test_metric{run=\"$run\"}"
	local body
	body=$(get "$GATEWAY_URL/api/v1/query" -H "Authorization: Bearer $other" --data-urlencode "query=smoke_test_metric{run=\"$run\"}")
	[ "$body" = '{"status":"success","data":{"resultType":"vector","result":[]}}' ] ||
		fail "team other sees team smoke's series: $body"
	echo "    team labels: ok"

	# vmagent scrapes the gateway and writes through it with its own token.
	until_contains 90 '"job":"vmgateway"' "$GATEWAY_URL/api/v1/query" -H "Authorization: Bearer $full" \
		--data-urlencode 'query=vmgateway_build_info'
	echo "    vmagent through the gateway: ok"
	echo "==> smoke test passed"
}

case "${1:-all}" in
keys) keys ;;
check) check ;;
all)
	# The image carries the version as make docker stamps it: -version and vmgateway_build_info show it.
	VERSION=${VERSION:-$(git -C ../.. describe --tags --always --dirty 2>/dev/null || echo dev)}
	export VERSION
	docker compose build vmgateway
	keys
	docker compose up -d
	if [ -z "${KEEP:-}" ]; then
		trap 'docker compose down -v' EXIT
	fi
	check
	;;
*)
	echo "usage: $0 [keys|check]" >&2
	exit 2
	;;
esac
