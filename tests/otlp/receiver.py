"""An OTLP/HTTP logs receiver built on PyPI's opentelemetry-proto (the
Python bindings generated from the official protos), independent of the
Rust code under test. It decodes each POST (binary protobuf, or OTLP/JSON
through protobuf's own json_format, strictly: unknown fields are errors),
prints one JSON line per request describing what it decoded, and answers
an empty ExportLogsServiceResponse. The first line printed is the port.
"""

import gzip
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def attrs(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        ctype = self.headers.get("content-type", "")
        encoding = self.headers.get("content-encoding")
        out = {"path": self.path, "content_type": ctype, "content_encoding": encoding}
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding not in (None, "identity"):
                raise ValueError(f"content-encoding {encoding}")
            req = ExportLogsServiceRequest()
            if ctype == "application/x-protobuf":
                req.ParseFromString(body)
                answer = ExportLogsServiceResponse().SerializeToString()
            elif ctype == "application/json":
                json_format.Parse(body, req)
                answer = json_format.MessageToJson(ExportLogsServiceResponse()).encode()
            else:
                raise ValueError(f"content-type {ctype}")
            out["resource_logs"] = [
                {
                    "resource": attrs(rl.resource.attributes),
                    "scopes": [
                        {
                            "scope": {"name": sl.scope.name, "version": sl.scope.version},
                            "records": [
                                {
                                    "time_unix_nano": r.time_unix_nano,
                                    "observed_time_unix_nano": r.observed_time_unix_nano,
                                    "severity_number": r.severity_number,
                                    "severity_text": r.severity_text,
                                    "event_name": r.event_name,
                                    "body": value(r.body),
                                    "attributes": attrs(r.attributes),
                                }
                                for r in sl.log_records
                            ],
                        }
                        for sl in rl.scope_logs
                    ],
                }
                for rl in req.resource_logs
            ]
            status = 200
        except Exception as e:  # noqa: BLE001 - reported to the test
            out["error"] = f"{type(e).__name__}: {e}"
            answer, status = str(e).encode(), 400
        print(json.dumps(out), flush=True)
        self.send_response(status)
        self.send_header("content-type", ctype or "text/plain")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    sys.exit(0)
