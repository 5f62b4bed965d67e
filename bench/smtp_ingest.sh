#!/usr/bin/env bash
# SMTP ingest benchmark (issue 3): our smtp-in + worker-in against the Postfix
# anchor, in the same run, with ../shared/bench/run_all.sh.
#
#   bench/smtp_ingest.sh                     # Postfix anchor + ours, 5 runs each
#   RUNS=3 SCALE=0.4 SKIP="fsync sink aiosmtpd" bench/smtp_ingest.sh
#
# "accepted" = smtp-source got 250 after DATA (durable: blob + queue fsynced);
# "delivered" = the messages are visible through the HTTP API (Inbox total).
# Ratios to Postfix are printed by bench/compare_ingest.py at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-$(cd ../shared/bench && pwd)}
SMTP_PORT=${SMTP_PORT:-2625}
HTTP_PORT=${HTTP_PORT:-8625}
DATA=$(mktemp -d /var/tmp/mailfleet-ingest.XXXXXX)
OUT=${OUT:-/tmp/anchor-results/$(date +%Y%m%d-%H%M%S)}
export OUT
MF=.venv/bin/mailfleet
# The mails come from an outside domain whose SPF names 127.0.0.1, with a
# DMARC record, on a loopback DNS server: smtp-in checks each sender at DATA
# (filters.sender_auth, on by default) as it would on the Internet.
# SENDER_AUTH=false measures without the checks.
DNS_PORT=${DNS_PORT:-2653}
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
"$DNSMASQ" --no-daemon --no-resolv --no-hosts --port="$DNS_PORT" --listen-address=127.0.0.1 \
  --bind-interfaces --conf-file=/dev/null --pid-file= --local=/bench.test/ \
  --txt-record=sender.bench.test,"v=spf1 ip4:127.0.0.1 -all" \
  --txt-record=_dmarc.sender.bench.test,"v=DMARC1; p=reject" > "$DATA/dnsmasq.log" 2>&1 &
dns_pid=$!
cat > "$DATA/bench.toml" <<TOML
[filters]
sender_auth = ${SENDER_AUTH:-true}
[smtp]
dns_servers = ["127.0.0.1"]
dns_port = $DNS_PORT
hostname = "mx.bench.test"
max_connections_per_ip = 1000
connections_per_minute_per_ip = 100000000
messages_per_minute_per_ip = 100000000
TOML
export MAILFLEET_CONFIG="$DATA/bench.toml"
$MF --data-dir "$DATA/d" domain add example.test >/dev/null
for u in user1 bench; do
  echo "benchmark password" | $MF --data-dir "$DATA/d" user add "$u@example.test" --password-stdin >/dev/null
done
$MF serve --data-dir "$DATA/d" --http "127.0.0.1:$HTTP_PORT" --smtp "127.0.0.1:$SMTP_PORT" \
  --submission 127.0.0.1:0 > "$DATA/serve.log" 2>&1 &
pid=$!
trap 'kill $pid $dns_pid 2>/dev/null; wait $pid $dns_pid 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null && break; sleep 0.1; done
TOKEN=$(curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/v1/sessions" -H 'content-type: application/json' \
  -d '{"email": "user1@example.test", "password": "benchmark password"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
# The Inbox total from GET /v1/folders, polled every 20 ms while waiting for
# delivery: curl and coreutils only (a python3 per poll cost ~0.1 s of CPU,
# taken from the server being measured).
COUNT="curl -sf -H 'Authorization: Bearer $TOKEN' http://127.0.0.1:$HTTP_PORT/v1/folders | tr '}' '\\n' | grep '\"role\":\"inbox\"' | grep -o '\"total\":[0-9]*' | cut -d: -f2"
OURS="127.0.0.1:$SMTP_PORT" OURS_COUNT_CMD="$COUNT" OURS_RCPT=user1@example.test \
  OURS_SENDER=bench@sender.bench.test "$SHARED/run_all.sh"
[ -f "$OUT/postfix.json" ] && [ -f "$OUT/ours.json" ] && \
  .venv/bin/python bench/compare_ingest.py "$OUT/postfix.json" "$OUT/ours.json"
# 250 -> visible at half our measured maximum (par20-4k accepted rate).
RATE=${LAT_RATE:-$(python3 -c 'import json,sys; print(max(1, json.load(open(sys.argv[1]))["scenarios"]["par20-4k"]["median_accept_rate"] / 2))' "$OUT/ours.json" 2>/dev/null || echo 50)}
.venv/bin/python bench/smtp_latency.py --smtp "127.0.0.1:$SMTP_PORT" --http "http://127.0.0.1:$HTTP_PORT" \
  --token "$TOKEN" --rcpt user1@example.test --rate "$RATE" --count "${LAT_COUNT:-1000}"
