"""A local stand-in for the part of the Cloudflare API v4 that a DNS provider uses, for
ferrymail's tests. Written from Cloudflare's public API v4 documentation (zones, DNS
records, the response envelope, result_info paging, the error envelope and its codes);
it is not Cloudflare code. Standard library only; binds 127.0.0.1.

    cloudflare_standin.py --port P --token TOKEN --zone example.test [--zone other.test]
                          [--per-page-max N] [--state FILE]

Prints "ready" once listening. API base is /client/v4 (Authorization: Bearer TOKEN):
  GET    /zones?name=&page=&per_page=                 GET /zones/{zone_id}
  GET    /zones/{zone_id}/dns_records?name=&type=&content=&page=&per_page=
  POST   /zones/{zone_id}/dns_records                 GET /zones/{zone_id}/dns_records/{id}
  PATCH  /zones/{zone_id}/dns_records/{id} (partial)  PUT (full)    DELETE -> {"id": ...}
  GET    /user/tokens/verify
Test controls (no auth): GET|POST /__standin/records, GET /__standin/zones,
POST /__standin/fail, GET|DELETE /__standin/requests, POST /__standin/reset.
Zone ids are the md5 hex of the zone name, so they are stable across runs."""
import argparse
import hashlib
import ipaddress
import json
import math
import os
import re
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BASE = "/client/v4"
TYPES = {"A", "AAAA", "CNAME", "MX", "TXT", "SRV", "CAA", "NS"}
PROXIABLE = {"A", "AAAA", "CNAME"}
EDITABLE = ("type", "name", "content", "ttl", "priority", "data", "proxied", "comment", "tags")
LABEL = re.compile(r"^(\*|[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)$")


class ApiError(Exception):
    def __init__(self, status, *errors):
        super().__init__(errors)
        self.status, self.errors = status, list(errors)


def err(code, message, chain=None):
    e = {"code": code, "message": message}
    if chain:
        e["error_chain"] = [{"code": code, "message": chain}]
    return e


def invalid(detail):  # Cloudflare's generic "DNS Validation Error"; detail is our own text
    return ApiError(400, err(1004, "DNS Validation Error", detail))


def no_route(path):
    return ApiError(404, err(7003, f"Could not route to {path}, perhaps your object identifier is invalid?"),
                    err(7000, "No route for that URI"))


def envelope(result, errors=(), info=None):
    body = {"success": not errors, "errors": list(errors), "messages": [], "result": result}
    if info is not None:
        body["result_info"] = info
    return body


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def zone_id(name):
    return hashlib.md5(name.encode()).hexdigest()


def as_int(value, lo, hi):
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi else None


def hostname(value):
    return str(value or "").strip().rstrip(".").lower()


def paginate(items, query, default, cap):
    def num(key, fallback):
        try:
            return max(1, int(query.get(key, fallback)))
        except ValueError:
            return fallback
    page, per = num("page", 1), min(num("per_page", default), cap)
    chunk = items[(page - 1) * per: page * per]
    return chunk, {"page": page, "per_page": per, "count": len(chunk),
                   "total_count": len(items), "total_pages": math.ceil(len(items) / per)}


class State:
    def __init__(self, zones, token, per_page_max, path):
        self.lock = threading.Lock()
        self.zones = {zone_id(z): z for z in (hostname(z) for z in zones)}
        self.token, self.cap, self.path = token, per_page_max, path
        self.records, self.failures, self.requests = [], [], []
        if path and os.path.exists(path):
            with open(path) as f:
                self.records = [r for r in json.load(f) if r.get("zone_id") in self.zones]

    def save(self):
        if self.path:
            with open(self.path + ".tmp", "w") as f:
                json.dump(self.records, f, indent=1)
            os.replace(self.path + ".tmp", self.path)

    def zone_obj(self, zid):
        return {"id": zid, "name": self.zones[zid], "status": "active", "paused": False, "type": "full",
                "name_servers": ["ns1.standin.invalid", "ns2.standin.invalid"]}

    def take_failure(self, method, path):
        for rule in self.failures:
            if rule["method"] in ("", method) and rule["path_contains"] in path:
                rule["count"] -= 1
                if rule["count"] <= 0:
                    self.failures.remove(rule)
                raise ApiError(rule["status"], err(rule["code"], rule["message"]))

    def find(self, zid, rid):
        for r in self.records:
            if r["zone_id"] == zid and r["id"] == rid:
                return r
        raise ApiError(404, err(81044, "Record does not exist."))

    def build(self, zid, body, old=None):
        """Validate a record body as Cloudflare does and return the stored record."""
        zone = self.zones[zid]
        rtype = str(body.get("type") or "").upper()
        if rtype not in TYPES:
            raise invalid(f"unsupported record type '{body.get('type')}'")
        raw = hostname(body.get("name"))
        if not raw:
            raise ApiError(400, err(9000, "DNS name is invalid."))
        name = zone if raw == "@" else raw if raw == zone or raw.endswith("." + zone) else f"{raw}.{zone}"
        if len(name) > 253 or not all(LABEL.match(label) for label in name.split(".")):
            raise ApiError(400, err(9000, "DNS name is invalid."))
        ttl = as_int(body.get("ttl", 1), 1, 86400)
        if ttl is None or 1 < ttl < 60:
            raise invalid("ttl must be 1 (automatic) or between 60 and 86400")
        proxied = bool(body.get("proxied", False))
        if proxied and rtype not in PROXIABLE:
            raise ApiError(400, err(9041, "Invalid proxied mode. Record cannot be proxied"))
        content, priority, data = body.get("content"), None, None
        if rtype == "SRV":
            data, priority, content = self.srv(body)
        elif rtype == "CAA":
            data, content = self.caa(body)
        elif not isinstance(content, str) or not content:
            raise invalid("content is a required field")
        elif rtype in ("A", "AAAA"):
            try:
                content = str(ipaddress.IPv4Address(content) if rtype == "A" else ipaddress.IPv6Address(content))
            except ValueError:
                raise ApiError(400, err(9005, "Content for A record must be a valid IPv4 address.") if rtype == "A"
                               else err(9006, "Content for AAAA record must be a valid IPv6 address."))
        elif rtype in ("CNAME", "NS", "MX"):
            content = hostname(content)
            if rtype == "CNAME" and (not content or re.fullmatch(r"[\d.]+|[0-9a-f:]+", content)):
                raise ApiError(400, err(9007, "Content for CNAME record is invalid."))
            if rtype == "MX":
                priority = as_int(body.get("priority"), 0, 65535)
                if priority is None:
                    raise ApiError(400, err(9100, "priority is a required field."))
        ts = now()
        rec = {"id": old["id"] if old else uuid.uuid4().hex, "zone_id": zid, "zone_name": zone,
               "name": name, "type": rtype, "content": content, "proxiable": rtype in PROXIABLE,
               "proxied": proxied, "ttl": ttl, "locked": False,
               "meta": {"auto_added": False, "source": "primary"},
               "comment": body.get("comment"), "tags": body.get("tags") or [],
               "created_on": old["created_on"] if old else ts, "modified_on": ts}
        if priority is not None:
            rec["priority"] = priority
        if data is not None:
            rec["data"] = data
        self.check_conflicts(rec)
        return rec

    @staticmethod
    def srv(body):
        data = body.get("data")
        if not isinstance(data, dict):  # fall back to "[priority] weight port target" content
            parts = str(body.get("content") or "").split()
            if len(parts) == 4:
                data = dict(zip(("priority", "weight", "port", "target"), parts))
            elif len(parts) == 3:
                data = dict(zip(("weight", "port", "target"), parts), priority=body.get("priority"))
            else:
                raise invalid("SRV needs data {priority, weight, port, target}")
        prio = as_int(data.get("priority", body.get("priority")), 0, 65535)
        if prio is None:
            raise ApiError(400, err(9100, "priority is a required field."))
        weight, port = as_int(data.get("weight"), 0, 65535), as_int(data.get("port"), 0, 65535)
        # "." is RFC 2782's "no such service here"; kept as is (not stripped to nothing).
        target = "." if str(data.get("target") or "").strip() == "." else hostname(data.get("target"))
        if weight is None or port is None or not target:
            raise invalid("SRV data needs weight, port (0-65535) and target")
        data = {"priority": prio, "weight": weight, "port": port, "target": target}
        return data, prio, f"{weight} {port} {target}"

    @staticmethod
    def caa(body):
        data = body.get("data")
        if not isinstance(data, dict):  # fall back to 'flags tag "value"' content
            m = re.fullmatch(r'\s*(\d+)\s+(\S+)\s+"?(.*?)"?\s*', str(body.get("content") or ""))
            if not m:
                raise invalid("CAA needs data {flags, tag, value}")
            data = {"flags": m.group(1), "tag": m.group(2), "value": m.group(3)}
        flags, tag, value = as_int(data.get("flags"), 0, 255), str(data.get("tag") or ""), data.get("value")
        if flags is None or tag not in ("issue", "issuewild", "iodef") or not isinstance(value, str):
            raise invalid("CAA data needs flags (0-255), tag (issue/issuewild/iodef) and value")
        return {"flags": flags, "tag": tag, "value": value}, f'{flags} {tag} "{value}"'

    def check_conflicts(self, rec):
        def key(r):
            c = r["content"] if r["type"] == "TXT" else r["content"].lower()
            return r["name"], r["type"], c, r.get("priority")
        for other in self.records:
            if other["zone_id"] != rec["zone_id"] or other["id"] == rec["id"] or other["name"] != rec["name"]:
                continue
            if rec["type"] == "CNAME":
                raise ApiError(400, err(81053, "An A, AAAA, or CNAME record with that host already exists."))
            if other["type"] == "CNAME":
                raise ApiError(400, err(81054, "A CNAME record with that host already exists."))
            if key(other) == key(rec):
                raise ApiError(400, err(81058, "An identical record already exists."))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cloudflare-standin"

    def do_GET(self): self.dispatch("GET")  # noqa: E704
    def do_POST(self): self.dispatch("POST")  # noqa: E704
    def do_PUT(self): self.dispatch("PUT")  # noqa: E704
    def do_PATCH(self): self.dispatch("PATCH")  # noqa: E704
    def do_DELETE(self): self.dispatch("DELETE")  # noqa: E704

    def log_message(self, *args):
        pass

    def dispatch(self, method):
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        st = self.server.state
        try:
            with st.lock:
                if path.startswith("/__standin/"):
                    status, body = self.control(st, method, path, raw)
                elif path == BASE or path.startswith(BASE + "/"):
                    status, body = self.api(st, method, path, url.query, query, raw)
                else:
                    raise no_route(path)
        except ApiError as e:
            status, body = e.status, envelope(None, e.errors)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def json_body(self, raw, api):
        ctype = self.headers.get("Content-Type") or ""
        if api and not ctype.lower().startswith("application/json"):
            raise ApiError(400, err(9207, "Content-type must be application/json."))
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(400, err(6007, "Malformed JSON in request body"))
        return body

    def api(self, st, method, path, qs, query, raw):
        entry = {"method": method, "path": path, "query": query, "query_string": qs, "body": None}
        st.requests.append(entry)
        if self.headers.get("Authorization") != f"Bearer {st.token}":
            raise ApiError(403, err(10000, "Authentication error"))
        st.take_failure(method, path)
        body = self.json_body(raw, True) if method in ("POST", "PUT", "PATCH") else None
        entry["body"] = body
        parts = path[len(BASE):].strip("/").split("/")
        if parts == ["user", "tokens", "verify"] and method == "GET":
            return 200, envelope({"id": zone_id(st.token), "status": "active"})
        if parts[0] != "zones":
            raise no_route(path)
        if len(parts) == 1 and method == "GET":
            want = hostname(query.get("name"))
            zones = [st.zone_obj(z) for z in st.zones if not want or st.zones[z] == want]
            chunk, info = paginate(zones, query, 20, st.cap)
            return 200, envelope(chunk, info=info)
        zid = parts[1] if len(parts) > 1 else ""
        if zid not in st.zones:
            raise no_route(path)
        if len(parts) == 2 and method == "GET":
            return 200, envelope(st.zone_obj(zid))
        if len(parts) < 3 or parts[2] != "dns_records" or len(parts) > 4:
            raise no_route(path)
        if len(parts) == 3 and method == "GET":
            want = {k: hostname(query.get(k) or query.get(k + ".exact")) for k in ("name", "type")}
            content = query.get("content") or query.get("content.exact")
            recs = [r for r in st.records if r["zone_id"] == zid
                    and (not want["name"] or r["name"] == want["name"])
                    and (not want["type"] or r["type"].lower() == want["type"])
                    and (content is None or r["content"].lower() == content.lower())]
            chunk, info = paginate(recs, query, 100, st.cap)
            return 200, envelope(chunk, info=info)
        if len(parts) == 3 and method == "POST":
            rec = st.build(zid, body)
            st.records.append(rec)
            st.save()
            return 200, envelope(rec)
        if len(parts) != 4 or method == "POST":
            raise no_route(path)
        old = st.find(zid, parts[3])
        if method == "GET":
            return 200, envelope(old)
        if method == "DELETE":
            st.records.remove(old)
            st.save()
            return 200, envelope({"id": old["id"]})
        if method == "PATCH":
            merged = {k: old[k] for k in EDITABLE if k in old}
            if "content" in body and "data" not in body:
                merged.pop("data", None)
            elif "priority" in body and isinstance(merged.get("data"), dict) and "data" not in body:
                merged["data"] = dict(merged["data"], priority=body["priority"])
            merged.update(body)
            body = merged
        rec = st.build(zid, body, old)
        st.records[st.records.index(old)] = rec
        st.save()
        return 200, envelope(rec)

    def control(self, st, method, path, raw):
        if path == "/__standin/records" and method == "GET":
            return 200, st.records
        if path == "/__standin/records" and method == "POST":
            body = self.json_body(raw, False)
            zone = hostname(body.get("zone"))
            if not zone:  # the longest configured zone the name ends with, else the only zone
                name = hostname(body.get("name"))
                fits = [z for z in st.zones.values() if name == z or name.endswith("." + z)]
                zone = max(fits, key=len) if fits else next(iter(st.zones.values()))
            if zone_id(zone) not in st.zones:
                raise no_route(path)
            rec = st.build(zone_id(zone), body)
            st.records.append(rec)
            st.save()
            return 200, rec
        if path == "/__standin/zones" and method == "GET":
            return 200, [st.zone_obj(z) for z in st.zones]
        if path == "/__standin/fail" and method == "POST":
            body = self.json_body(raw, False)
            st.failures.append({"method": str(body.get("method") or "").upper(),
                                "path_contains": str(body.get("path_contains") or ""),
                                "count": int(body.get("count", 1)), "status": int(body.get("status", 500)),
                                "code": int(body.get("code", 10001)),
                                "message": str(body.get("message") or "Injected failure (stand-in)")})
            return 200, {"ok": True}
        if path == "/__standin/requests" and method in ("GET", "DELETE"):
            log = list(st.requests)
            if method == "DELETE":
                st.requests.clear()
            return 200, log
        if path == "/__standin/reset" and method == "POST":
            for items in (st.records, st.failures, st.requests):
                items.clear()
            st.save()
            return 200, {"ok": True}
        raise no_route(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--zone", action="append", required=True)
    ap.add_argument("--per-page-max", type=int, default=100)
    ap.add_argument("--state", help="JSON file the records are kept in across restarts")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args.zone, args.token, max(1, args.per_page_max), args.state)
    print("ready", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
